"""``clipforge ui``: launch the Gradio studio (the ``[ui]`` extra) in the browser."""

from __future__ import annotations

from typing import Optional

import typer

from clipforge.cli.common import exits, quiet_option
from clipforge.errors import UsageError


def ui(host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes it)."),
       port: int = typer.Option(7860, help="Port."),
       auth: Optional[str] = typer.Option(None, help="Require login: USER:PASSWORD."),
       outdir: Optional[str] = typer.Option(
           None, help="Folder for the studio's result PNGs (a reload reads its gallery back "
                      "from here; a new temporary folder by default)."),
       quiet: bool = quiet_option()) -> None:
    """Launch the Gradio studio in the browser."""
    with exits():
        try:
            from clipforge.ui.app import launch
        except ImportError as e:
            raise UsageError(f"the studio needs gradio ({e}); run: pip install "
                             "'clipforge[ui]'") from None
        launch(host=host, port=port, auth=auth, quiet=quiet, output_dir=outdir)


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the app.

    Args:
        app: the ``clipforge`` Typer app.
    """
    app.command("ui")(ui)
