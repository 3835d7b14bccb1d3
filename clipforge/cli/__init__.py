"""The ``clipforge`` command line: a Typer app with every command registered here, explicitly.

One module per command group, each with a ``register(app)``: :mod:`~clipforge.cli.generate`,
:mod:`~clipforge.cli.batch`, :mod:`~clipforge.cli.train` (train-clip, classify, score),
:mod:`~clipforge.cli.models` (models, convert-vqgan) and :mod:`~clipforge.cli.ui`; what they
share (the one error -> exit mapping, SIGTERM, the progress bars) is in
:mod:`~clipforge.cli.common`, the flags derived from RunConfig in :mod:`~clipforge.cli.options`.
This package is the top floor: nothing in clipforge imports it, and Typer is imported nowhere
else. Importing it loads no model and no torch (``clipforge batch --plan`` stays light).
"""

from __future__ import annotations

import typer

from clipforge.cli import batch, generate, models, train, ui

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="CLIP-guided image generation.")

for _commands in (generate, models, ui, train, batch):  # the order of `clipforge --help`
    _commands.register(app)


def main() -> None:
    """Console entry point (``clipforge``, ``python -m clipforge``)."""
    app()


__all__ = ["app", "main"]
