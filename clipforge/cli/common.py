"""What every command shares: the one error -> exit mapping, SIGTERM, the one progress display.

Exit codes are decided by :func:`clipforge.errors.exit_code` alone: 0 success, 1 a runtime
failure (:class:`~clipforge.errors.RunError`, ``OSError``, anything unexpected), 2 bad usage or
input (every :class:`~clipforge.errors.UsageError`, reported before any work starts), 130
interrupted (Ctrl-C, or SIGTERM turned into the same by :func:`sigterm_as_interrupt`).
:func:`report` prints the one line a failure gets and returns that code; :func:`exits` wraps a
command body with it. :class:`ProgressBars` is the rich display that generate, batch and
train-clip draw their progress with (on stderr, so stdout stays for results).
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Iterator

import typer

from clipforge.errors import EXIT_INTERRUPTED, RunError, UsageError, exit_code


def quiet_option() -> Any:
    """The ``-q``/``--quiet`` flag every command has: no progress display, no notes on stderr
    (errors and results still print)."""
    return typer.Option(False, "--quiet", "-q", help="No progress display or notes on stderr "
                        "(errors and results still print).")


@contextlib.contextmanager
def loading(what: str, quiet: bool = False) -> Iterator[None]:
    """Show that models are loading (the seconds before the first step): a line on stderr, a
    spinner while it lasts on a terminal, and the time it took.

    Args:
        what: what loads, e.g. ``CLIP shapes, generator pixel``.
        quiet: show nothing.
    """
    if quiet:
        yield
        return
    from rich.console import Console

    console = Console(stderr=True)
    t0 = time.perf_counter()
    echo_err(f"loading {what} ...")
    with console.status(f"loading {what}") if console.is_terminal else contextlib.nullcontext():
        yield
    echo_err(f"loaded in {time.perf_counter() - t0:.1f} s")


def echo_err(message: str) -> None:
    """Print one line on stderr.

    Args:
        message: the line.
    """
    typer.echo(message, err=True)


def report(exc: BaseException, note: str = "") -> int:
    """Print the one line a failure gets on stderr and return its exit code.

    Args:
        exc: the exception (KeyboardInterrupt included).
        note: appended after ``; `` (what happened to the work, how to resume).

    Returns:
        ``clipforge.errors.exit_code(exc)``: 2 bad input, 130 interrupted, 1 anything else.
    """
    code = exit_code(exc)
    if code == EXIT_INTERRUPTED:
        message = "interrupted"
    elif isinstance(exc, (UsageError, RunError, OSError)):
        message = f"error: {exc}"
    else:
        message = f"error: {type(exc).__name__}: {exc}"
    echo_err(message + (f"; {note}" if note else ""))
    return code


@contextlib.contextmanager
def exits(note: str = "") -> Iterator[None]:
    """Run a command body; any failure is reported and becomes ``typer.Exit(code)``.

    Args:
        note: passed to :func:`report`.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):  # a deliberate exit: typer handles it
        raise
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the CLI reports any failure
        raise typer.Exit(report(e, note)) from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so cleanup and exit code 130 match Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class ProgressBars:
    """Rich progress bars on stderr (description, bar, done/total, times, info); none when quiet.

    Use as a context manager; :meth:`add` a bar, then :meth:`update` it or feed it loop Steps
    with :meth:`step` (the loss is read back, a host sync, only when the bar redraws).

    Args:
        quiet: draw and note nothing.
        redraw_s: the least time between two loss read-backs.
    """

    def __init__(self, quiet: bool = False, redraw_s: float = 0.5):
        self.quiet, self.redraw_s = quiet, redraw_s
        self.bars = None
        self._last: dict[Any, float] = {}

    def __enter__(self) -> "ProgressBars":
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=Console(stderr=True), transient=False)
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bars is not None:
            self.bars.__exit__(*exc)
            self.bars = None

    def add(self, description: str, total: int | None = None, **kw: Any) -> Any:
        """Add a bar; returns its id (None when quiet).

        Args:
            description: the text before the bar.
            total: its length (None: unknown).
            kw: rich's task options (``completed``, ``visible``).
        """
        if self.bars is None:
            return None
        return self.bars.add_task(description, total=total, info="", **kw)

    def update(self, bar: Any, **kw: Any) -> None:
        """Change a bar (rich's ``update``: ``completed``, ``total``, ``description``, ``info``).

        Args:
            bar: the id :meth:`add` returned.
            kw: what changes; ``advance=1`` moves it one on.
        """
        if self.bars is not None and bar is not None:
            self.bars.update(bar, **kw)

    def step(self, bar: Any, step: Any, loss: bool = True) -> None:
        """Show a loop Step on a bar: its index always, its loss at most every ``redraw_s``.

        Args:
            bar: the id :meth:`add` returned.
            step: a :class:`clipforge.loop.Step`.
            loss: show the loss too.
        """
        if self.bars is None or bar is None:
            return
        now = time.monotonic()
        if loss and (now - self._last.get(bar, 0.0) > self.redraw_s or step.i == step.total):
            self._last[bar] = now  # sync for display only
            self.bars.update(bar, completed=step.i, info=f"loss {float(step.loss):.4f}")
        else:
            self.bars.update(bar, completed=step.i)

    def note(self, text: str) -> None:
        """Print a line above the bars (nothing when quiet).

        Args:
            text: the line.
        """
        if self.bars is not None:
            self.bars.console.print(text, markup=False, highlight=False)


__all__ = ["quiet_option", "loading", "echo_err", "report", "exits", "sigterm_as_interrupt",
           "ProgressBars"]
