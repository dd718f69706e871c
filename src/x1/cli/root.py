"""The root `x1` app, the consoles and the one-line error exit that every command group shares.

A module of its own so that each group's module can import ``fail`` and the consoles without importing
the package that assembles the groups (which imports them)."""

from __future__ import annotations

import signal
import threading
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)
INTERRUPTED = "interrupted (Ctrl-C): finished work is saved; rerun the same command (x1 eval with --resume) to continue"


def _on_interrupt(signum: int, frame: object) -> None:
    """Say what Ctrl-C left behind; typer then exits 130 (it swallows KeyboardInterrupt, so no handler around app() would run)."""
    err_console.print(f"[bold yellow]{INTERRUPTED}[/]", soft_wrap=True)
    raise KeyboardInterrupt


class _Typer(typer.Typer):
    """The ``x1`` console script calls the app object itself, so its Ctrl-C message lives here, on the app."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_interrupt)
        return super().__call__(*args, **kwargs)


app = _Typer(add_completion=False, no_args_is_help=True, help="x1: reasoning language models from the blueprint's parts.")


def fail(message: str) -> NoReturn:
    """One escaped red line (a fix such as pip install 'x1[ray]' is no markup), never wrapped, exit 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)
