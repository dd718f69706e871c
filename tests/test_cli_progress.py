"""Progress of long runs: off a terminal (a log under nohup) dated lines, which rich's bar prints only at the end."""

import io
import re

from rich.console import Console

from x1.cli.progress import RunProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_it_prints_a_line_per_cell_and_at_most_one_a_minute_between():
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=False, width=200)
    with RunProgress("study", 40, console=console, clock=clock) as progress:
        progress.skip(10, description="majority N=4")  # finished by an earlier run: not the pace
        for _ in range(5):
            clock.now += 10
            progress.advance(1, status="3/5 right")
        assert len(out.getvalue().splitlines()) == 2  # the start and the new cell; 50 s is under a minute
        clock.now += 10
        progress.advance(1, status="4/6 right")  # a minute after the last line
        progress.skip(0, description="beam N=4")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] study: 0/40 \(0%\) · 0s elapsed", lines[0])
    assert "majority N=4: 10/40 (25%)" in lines[1]
    # 6 problems in 60 s: the 24 left take 240 s at this run's pace (the 10 skipped ones are not counted)
    assert lines[2].endswith("majority N=4: 16/40 (40%) · 4/6 right · 1m00s elapsed · about 4m00s left at this run's pace")
    assert "beam N=4: 16/40" in lines[3]


def test_the_end_is_always_printed_and_a_terminal_gets_the_bar():
    out, clock = io.StringIO(), Clock()
    with RunProgress("eval", 2, console=Console(file=out, force_terminal=False), clock=clock) as progress:
        progress.advance(1)
        progress.advance(1)
    assert out.getvalue().splitlines()[-1].split("] ")[1].startswith("eval: 2/2 (100%)")
    shown = io.StringIO()
    with RunProgress("eval", 2, console=Console(file=shown, force_terminal=True), clock=clock) as progress:
        progress.advance(2, status="2/2 right")
    assert "eval · 2/2 right" in shown.getvalue() and "elapsed" not in shown.getvalue()
