"""``clipforge generate``: one prompt (or a PNG's saved run, or a checkpoint) to one PNG.

Settings layer with :func:`clipforge.config.merge`: the saved run (``--from image.png`` or the
checkpoint of ``--resume``), then the flags, then the prompt argument. Bad input exits 2
before any model loads; the run's progress is drawn with the shared
:class:`~clipforge.cli.common.ProgressBars`; the PNG's path is the only line on stdout.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from clipforge.cli.common import (ProgressBars, echo_err, loading, quiet_option, report,
                                  sigterm_as_interrupt)
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
              as_json: bool, checkpoint_every: int, resume: Optional[Path], overwrite: bool,
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
            from clipforge.pngtext import png_settings

            saved, ignored = png_settings(from_png)
            if ignored:  # settings dropped: said even with -q, like a drawn seed
                echo_err(f"note: {from_png} carries A1111 parameters only; used the prompts, "
                         f"steps, seed and size, ignored: {', '.join(ignored)}")
        else:
            saved = ckpt.config if ckpt is not None else None
        cfg = RunConfig.from_settings(saved, flag_settings(flags), {"prompt": prompt})
    except Exception as e:  # noqa: BLE001 - reported by the one mapper
        raise typer.Exit(report(e)) from None
    raise typer.Exit(render(cfg, out, quiet=quiet, checkpoint_every=checkpoint_every,
                            resume=ckpt, as_json=as_json, overwrite=overwrite or ckpt is not None))


def render(cfg: RunConfig, out: Optional[Path], *, quiet: bool = False,
           checkpoint_every: int = 0, resume=None, as_json: bool = False,
           overwrite: bool = False) -> int:
    """Run one config to a PNG (and a progress GIF, and MP4 with ``save_video``, with
    ``save_every``); returns the exit code.

    Args:
        cfg: the settings (seed -1 draws one; it is reported and saved).
        out: a .png file or a folder (default ``out/``).
        quiet: no progress display, no notes on stderr.
        checkpoint_every: K > 0 saves the run's state beside the PNG (``NAME.ckpt``) every K
            steps.
        resume: a :class:`clipforge.checkpoint.Checkpoint` to continue.
        as_json: print ``{"path", "seed", "seconds", "loss"}`` as one JSON line on stdout
            instead of the path.
        overwrite: replace an existing PNG (else exit 2 before any work).
    """
    import torch

    from clipforge.frames import recorder_for, write_beside
    from clipforge.outputs import save_png
    from clipforge.runner import Run, resolve_seed

    run, drawn, t0 = None, cfg.seed == -1, time.perf_counter()
    try:
        cfg = resolve_seed(cfg)  # the concrete seed names the file, checked before any work
        path = _output_path(out, cfg, overwrite)
        if cfg.device == "auto" and not torch.cuda.is_available() and not quiet:
            echo_err("note: no GPU found, running on the CPU")
        frames = recorder_for(cfg)  # the video encoder is checked before any model loads
        with loading(f"CLIP {', '.join(cfg.clip)}, generator {cfg.generator}", quiet):
            run = Run(cfg)
        cfg = run.config  # as saved: the precision made concrete
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
    if drawn or not quiet:  # a drawn seed is part of the result: always said
        echo_err(f"seed: {cfg.seed}")
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
        save_png(path, run.image(), cfg, options=run.generator_settings())
        final_loss = float(run.step.loss) if run.step is not None else None
        if frames is not None:
            write_beside(path, frames.encoded())
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported by the one mapper
        return report(e)
    finally:
        run.release()
    seconds = time.perf_counter() - t0
    if not quiet:
        echo_err(f"wrote {path} ({seconds:.1f} s)")
    typer.echo(json.dumps({"path": str(path), "seed": cfg.seed, "seconds": round(seconds, 3),
                           "loss": final_loss}) if as_json else str(path))
    return EXIT_OK


PARAMS = [
    argument("prompt", Optional[str], None, help=field_help()["prompt"], show_default=False),
    option("from_png", Optional[Path], None, "--from", help="Repeat the run saved in a "
           "clipforge PNG, or take an A1111 PNG's prompts, steps, seed and size (other flags "
           "override it)."),
    option("out", Optional[Path], None, "--out", "-o", help="Output .png file or folder "
           "(default: out/)"),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=quiet_option()),
    option("overwrite", bool, False, help="Replace an existing PNG (without it, an existing "
           "output is refused before any work; --resume replaces its own run's PNG)."),
    option("as_json", bool, False, "--json", help="Print one JSON line per image written "
           "(path, seed, seconds, final loss) instead of its path."),
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
