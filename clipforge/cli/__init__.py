"""The ``clipforge`` command line: a Typer app with every command registered here, explicitly.

One module per command group, each with a ``register(app)``: :mod:`~clipforge.cli.generate`,
:mod:`~clipforge.cli.batch`, :mod:`~clipforge.cli.train` (train-clip, classify, score),
:mod:`~clipforge.cli.models` (models, convert-vqgan) and :mod:`~clipforge.cli.ui`; what they
share (the one error -> exit mapping, SIGTERM, the progress bars) is in
:mod:`~clipforge.cli.common`, the flags derived from RunConfig in :mod:`~clipforge.cli.options`.
This package is the top floor: nothing in clipforge imports it, and Typer is imported nowhere
else. Importing it loads no model and no torch (``clipforge batch --plan`` stays light).
Conventions: ``--version``, ``-h``/``--help`` on every command, ``--install-completion`` for
the shell, ``python -m clipforge``, ``-q``/``--quiet`` on every command, ``--json`` where
there are results to read.
"""

from __future__ import annotations

import typer

from clipforge.cli import batch, generate, models, train, ui

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="CLIP-guided image generation.")


def _version(value: bool) -> None:
    if value:
        from clipforge import __version__

        typer.echo(f"clipforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version,
                                       is_eager=True, help="Print the version and exit.")
          ) -> None:
    """CLIP-guided image generation (``-h`` on any command for its flags)."""

for _commands in (generate, models, ui, train, batch):  # the order of `clipforge --help`
    _commands.register(app)


def main() -> None:
    """Console entry point (``clipforge``, ``python -m clipforge``)."""
    app()


__all__ = ["app", "main"]
