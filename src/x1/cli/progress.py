"""Progress of a long run: a bar on a terminal, dated lines anywhere else.

rich's bar redraws in place, which a log file cannot do, so on a console that is not a terminal
(``nohup x1 scale ... > study.log``, CI) it prints nothing until the run ends. A study runs for hours
in the background; its log should say where it is. Off a terminal this prints one line when a run
starts, whenever its description changes (a new cell), at most one a minute between, and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from x1.cli.root import err_console
from x1.training.progress import eta_text


class RunProgress:
    """Problems done out of ``total``; ``skip`` counts those an earlier run finished, which the pace leaves out.

    A new ``description`` (the study's next cell) prints a line at once and clears the ``status`` (how
    many are right so far), which otherwise only shows in the next line.
    """

    def __init__(self, description: str, total: int, *, done: int = 0, remaining: bool = False, transient: bool = False,
                 console: Console | None = None, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.description, self.total = description, total
        self._console = console or err_console
        self._every_s, self._clock = every_s, clock
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self._console.is_terminal:
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            if remaining:
                columns.append(TimeRemainingColumn())
            self._bar = Progress(*columns, console=self._console, transient=transient)
        self.status = ""
        self.done = done  # finished, those an earlier run finished included
        self._worked = 0  # finished by this run: what the pace is taken from
        self._start = self._last_line = 0.0
        self._unreported = False

    @property
    def console(self) -> Console:
        """Where lines printed during the run go (above the bar on a terminal)."""
        return self._bar.console if self._bar is not None else self._console

    def __enter__(self) -> RunProgress:
        self._start = self._clock()
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        else:
            self._line()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, trace)
        elif self._unreported:
            self._line()

    def advance(self, n: int = 1, description: str | None = None, status: str | None = None) -> None:
        """``n`` problems finished by this run."""
        self._worked += n
        self._move(n, description, status)

    def skip(self, n: int, description: str | None = None) -> None:
        """``n`` problems an earlier run finished (a resume), or a new ``description`` with ``n`` = 0."""
        self._move(n, description, None)

    def _move(self, n: int, description: str | None, status: str | None) -> None:
        changed = description is not None and description != self.description
        if changed:
            self.description, self.status = description, ""  # the last cell's count is not this one's
        if status is not None:
            self.status = status
        self.done += n
        if self._bar is not None:
            assert self._task is not None
            label = f"{self.description} · {self.status}" if self.status else self.description
            self._bar.update(self._task, advance=n, description=label)
            return
        self._unreported = True
        if changed or self._clock() - self._last_line >= self._every_s:
            self._line()

    def _line(self) -> None:
        now = self._clock()
        elapsed = now - self._start
        parts = [f"{self.description}: {self.done}/{self.total}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        if self.status:
            parts.append(self.status)
        parts.append(f"{eta_text(elapsed)} elapsed")
        if self._worked and self.done < self.total:
            parts.append(f"about {eta_text((self.total - self.done) * elapsed / self._worked)} left at this run's pace")
        self._console.print(f"[{time.strftime('%H:%M:%S')}] " + " · ".join(parts), markup=False, highlight=False, soft_wrap=True)
        self._last_line, self._unreported = now, False
