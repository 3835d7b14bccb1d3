"""``clipforge generate``: one prompt (or a PNG's saved run, or a checkpoint) to one PNG.

Settings layer with :func:`clipforge.config.merge`: the saved run (``--from image.png`` or the
checkpoint of ``--resume``), then the flags, then the prompt argument. Bad input exits 2
before any model loads; the run's progress is drawn with the shared
:class:`~clipforge.cli.common.ProgressBars`; the PNG's path is the only line on stdout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from clipforge.cli.common import ProgressBars, echo_err, report, sigterm_as_interrupt
from clipforge.cli.options import argument, command, config_parameters, flag_settings, option
from clipforge.config import RunConfig, field_help
from clipforge.errors import EXIT_OK, ConfigError


def _output_path(out: Optional[Path], cfg: RunConfig, overwrite: bool) -> Path:
    """``out`` when it names a .png, else a name made from the settings inside ``out``;
    checked (:mod:`clipforge.targets`) but not created, so a refused run leaves nothing."""
    from clipforge.outputs import default_name, safe_join
    from clipforge.targets import check_file, check_folder

    if out is not None and out.suffix.lower() == ".png":
        return check_file(out, overwrite=overwrite)
    folder = check_folder(out if out is not None else Path("out"))
    return check_file(safe_join(folder, default_name(cfg)), overwrite=overwrite)


def _generate(prompt: Optional[str], from_png: Optional[Path], out: Optional[Path], quiet: bool,
              checkpoint_every: int, resume: Optional[Path], overwrite: bool,
              **flags: Any) -> None:
    """The command body: settings from the layers, then :func:`render`."""
    try:
        if checkpoint_every < 0:
            raise ConfigError("checkpoint_every", f"{checkpoint_every} is out of range; "
                              "allowed: >= 0 (0 = off)")
        ckpt = None
        if resume is not None:
            from clipforge.checkpoint import load_checkpoint

            ckpt = load_checkpoint(resume)
        if from_png is not None:
            from clipforge.outputs import read_config

            saved = read_config(from_png)
        else:
            saved = ckpt.config if ckpt is not None else None
        cfg = RunConfig.from_settings(saved, flag_settings(flags), {"prompt": prompt})
    except Exception as e:  # noqa: BLE001 - reported by the one mapper
        raise typer.Exit(report(e)) from None
    raise typer.Exit(render(cfg, out, quiet=quiet, checkpoint_every=checkpoint_every,
                            resume=ckpt, overwrite=overwrite or ckpt is not None))


def render(cfg: RunConfig, out: Optional[Path], *, quiet: bool = False,
           checkpoint_every: int = 0, resume=None, overwrite: bool = False) -> int:
    """Run one config to a PNG (and a progress GIF with ``save_every``); returns the exit code.

    Args:
        cfg: the settings (seed -1 draws one; it is reported and saved).
        out: a .png file or a folder (default ``out/``).
        quiet: no progress bar.
        checkpoint_every: K > 0 saves the run's state beside the PNG (``NAME.ckpt``) every K
            steps.
        resume: a :class:`clipforge.checkpoint.Checkpoint` to continue.
        overwrite: replace an existing PNG (else exit 2 before any work).
    """
    import torch

    from clipforge.outputs import FrameRecorder, save_png
    from clipforge.runner import Run, resolve_seed

    run = None
    try:
        cfg = resolve_seed(cfg)  # the concrete seed names the file, checked before any work
        path = _output_path(out, cfg, overwrite)
        if cfg.device == "auto" and not torch.cuda.is_available():
            echo_err("note: no GPU found, running on the CPU")
        run = Run(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)  # checked above; made once work starts
        if checkpoint_every or resume is not None:
            from clipforge.checkpoint import check_supported, default_path, restore

            check_supported(run)
            ckpt_path = default_path(path)
            if resume is not None:
                restore(run, resume)
                echo_err(f"resuming at step {run.done} of {cfg.steps}")
    except Exception as e:  # noqa: BLE001 - reported by the one mapper
        if run is not None:
            run.release()
        return report(e)
    echo_err(f"seed: {cfg.seed}")
    frames = FrameRecorder(cfg.save_every) if cfg.save_every else None
    t0 = time.perf_counter()
    try:
        with sigterm_as_interrupt(), ProgressBars(quiet or cfg.steps == 0) as bars:
            bar = bars.add("[bold]generate", total=cfg.steps)
            for step in run:
                if frames is not None:
                    frames(step)
                bars.step(bar, step)
                if checkpoint_every and step.i % checkpoint_every == 0 and step.i < step.total:
                    from clipforge.checkpoint import save_checkpoint

                    save_checkpoint(run, ckpt_path)
        save_png(path, run.image(), cfg)
        if frames is not None:
            frames.save_gif(path.with_suffix(".gif"))
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported by the one mapper
        return report(e)
    finally:
        run.release()
    echo_err(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")
    typer.echo(str(path))
    return EXIT_OK


PARAMS = [
    argument("prompt", Optional[str], None, help=field_help()["prompt"], show_default=False),
    option("from_png", Optional[Path], None, "--from", help="Repeat the run saved in a "
           "clipforge PNG (other flags override it)."),
    option("out", Optional[Path], None, "--out", "-o", help="Output .png file or folder "
           "(default: out/)"),
    option("quiet", bool, False, "--quiet", "-q", help="No progress bar."),
    option("overwrite", bool, False, help="Replace an existing PNG (without it, an existing "
           "output is refused before any work; --resume replaces its own run's PNG)."),
    option("checkpoint_every", int, 0, help="Save the run's state beside the PNG (NAME.ckpt) "
           "every K steps (0 = off)."),
    option("resume", Optional[Path], None, help="Continue the run saved in a checkpoint (its "
           "settings are the default; ends pixel-identical to an unbroken run)."),
    *config_parameters(),
]


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the app.

    Args:
        app: the ``clipforge`` Typer app.
    """
    app.command("generate")(command(
        _generate, PARAMS, "Generate one image from a prompt (or repeat a PNG's run with --from)."))
