"""The ``clipforge`` command line: generate, models, ui, and the commands other modules add.

The ``generate`` flags are derived from :class:`~clipforge.config.RunConfig` (names, help and
defaults), so a default exists once. Exit codes: 0 success, 1 runtime failure, 2 bad usage or
input (reported before any work starts), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from clipforge.config import ConfigError, RunConfig, parse_size

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="CLIP-guided image generation.")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(message: str) -> None:
    typer.echo(message, err=True)


def usage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input": reported with exit code 2."""
    from clipforge.errors import UsageError

    return (UsageError,)


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


# ---------------------------------------------------------------------------------------------
# RunConfig -> CLI options


def _config_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(RunConfig) if f.name not in ("width", "height")]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_parameters() -> list[inspect.Parameter]:
    """One typer option per RunConfig field (``--size`` stands for width and height).

    Every option defaults to None, meaning "not given": the RunConfig default applies, or the
    value from ``--from``.
    """
    params = []
    for f in _config_fields():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "prompt":
            continue  # the positional argument
        if isinstance(default, bool):
            ann, decl = Optional[bool], (f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}",)
        elif isinstance(default, int):
            ann, decl = Optional[int], (_flag(f.name),)
        elif isinstance(default, float):
            ann, decl = Optional[float], (_flag(f.name),)
        elif isinstance(default, tuple):
            ann, decl = Optional[list[str]], (_flag(f.name.rstrip("s")) if f.name == "image_prompts"
                                              else _flag(f.name),)
        else:
            ann, decl = Optional[str], (_flag(f.name),)
        shown = json.dumps(default) if isinstance(default, (dict, tuple)) else default
        help_text = f"{f.metadata.get('help', '')} (default: {shown})"
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=typer.Option(None, *decl, help=help_text,
                                                             show_default=False),
                                        annotation=ann))
    params.append(inspect.Parameter(
        "size", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
        default=typer.Option(None, "--size", help="N (square) or WxH (default: 256)",
                             show_default=False)))
    return params


def config_from_options(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Merge the options that were given over ``base`` (or the defaults) into a RunConfig."""
    data = base.to_dict() if base is not None else {}
    for f in _config_fields():
        v = values.get(f.name)
        if v is None:
            continue
        if f.name == "clip":
            v = [s.strip() for item in v for s in item.split(",") if s.strip()]
        elif f.name == "generator_options":
            try:
                v = json.loads(v)
            except json.JSONDecodeError as e:
                raise ConfigError("generator_options", f"expected a JSON object: {e}") from None
        data[f.name] = v
    if values.get("size") is not None:
        data["width"], data["height"] = parse_size(values["size"])
    return RunConfig.from_dict(data)


# ---------------------------------------------------------------------------------------------
# generate


def _output_path(out: Optional[Path], cfg: RunConfig) -> Path:
    from clipforge.outputs import default_name

    if out is not None and out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    folder = out if out is not None else Path("out")
    folder.mkdir(parents=True, exist_ok=True)
    from clipforge.outputs import safe_join

    return safe_join(folder, default_name(cfg))


def _generate(prompt: Optional[str], from_png: Optional[Path], out: Optional[Path], quiet: bool,
              checkpoint_every: int = 0, resume: Optional[Path] = None, **options: Any) -> None:
    from clipforge.outputs import read_config

    try:
        if checkpoint_every < 0:
            raise ConfigError("checkpoint_every", f"{checkpoint_every} is out of range; "
                              "allowed: >= 0 (0 = off)")
        ckpt = None
        if resume is not None:
            from clipforge.checkpoint import load_checkpoint

            ckpt = load_checkpoint(resume)
        base = read_config(from_png) if from_png is not None else (
            ckpt.config if ckpt is not None else None)
        if prompt is not None:
            options["prompt"] = prompt
        cfg = config_from_options(options, base)
    except usage_errors() as e:
        _err(f"error: {e}")
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(render(cfg, out, quiet=quiet, checkpoint_every=checkpoint_every,
                            resume=ckpt))


def render(cfg: RunConfig, out: Optional[Path], *, quiet: bool = False,
           checkpoint_every: int = 0, resume=None) -> int:
    """Run one config to a PNG (and an optional progress GIF); returns the exit code.

    ``checkpoint_every`` K > 0 saves the run's state beside the PNG (``NAME.ckpt``) every K
    steps; ``resume`` (a :class:`clipforge.checkpoint.Checkpoint`) continues such a run.
    """
    import torch

    from clipforge.errors import NonFiniteLossError, RunOutOfMemoryError
    from clipforge.runner import Run
    from clipforge.outputs import FrameRecorder, save_png

    try:
        if cfg.device == "auto" and not torch.cuda.is_available():
            _err("note: no GPU found, running on the CPU")
        run = Run(cfg)
        cfg = run.config  # with the concrete seed when -1 was given
        path = _output_path(out, cfg)
        if checkpoint_every or resume is not None:
            from clipforge.checkpoint import check_supported, default_path, restore, \
                save_checkpoint

            check_supported(run)
            ckpt_path = default_path(path)
            if resume is not None:
                restore(run, resume)
                _err(f"resuming at step {run.done} of {cfg.steps}")
    except usage_errors() as e:
        _err(f"error: {e}")
        return EXIT_USAGE
    _err(f"seed: {cfg.seed}")
    frames = FrameRecorder(cfg.save_every) if cfg.save_every else None
    t0 = time.perf_counter()
    try:
        with sigterm_as_interrupt(), _progress(cfg.steps, quiet) as advance:
            for step in run:
                if frames is not None:
                    frames(step)
                advance(step)
                if checkpoint_every and step.i % checkpoint_every == 0 and step.i < step.total:
                    save_checkpoint(run, ckpt_path)
        save_png(path, run.image(), cfg)
        if frames is not None:
            frames.save_gif(path.with_suffix(".gif"))
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except (NonFiniteLossError, RunOutOfMemoryError, OSError) as e:
        _err(f"error: {e}")
        return EXIT_RUNTIME
    finally:
        run.release()
    _err(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")
    typer.echo(str(path))
    return EXIT_OK


@contextlib.contextmanager
def _progress(total: int, quiet: bool):
    """A rich progress bar on stderr; the loss is read back only when the bar redraws."""
    if quiet or total == 0:
        yield lambda step: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    last = [0.0]
    with Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                  console=console, transient=False) as bar:
        task = bar.add_task("generate", total=total, loss="")

        def advance(step) -> None:
            now = time.monotonic()
            fields = {}
            if now - last[0] > 0.5 or step.i == step.total:  # sync for display only
                last[0] = now
                fields["loss"] = f"loss {float(step.loss):.4f}"
            bar.update(task, completed=step.i, **fields)

        yield advance


def _generate_command():
    """Build ``generate`` with a signature derived from RunConfig."""
    def generate(**kwargs: Any) -> None:
        _generate(kwargs.pop("prompt"), kwargs.pop("from_png"), kwargs.pop("out"),
                  kwargs.pop("quiet"), kwargs.pop("checkpoint_every"), kwargs.pop("resume"),
                  **kwargs)

    params = [
        inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=Optional[str],
                          default=typer.Argument(None, help=RunConfig.__dataclass_fields__[
                              "prompt"].metadata["help"], show_default=False)),
        inspect.Parameter("from_png", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--from", help="Repeat the run saved in a "
                                               "clipforge PNG (other flags override it).")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--out", "-o", help="Output .png file or "
                                               "folder (default: out/)")),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--quiet", "-q", help="No progress bar.")),
        inspect.Parameter("checkpoint_every", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(0, "--checkpoint-every", help="Save the run's "
                                               "state beside the PNG (NAME.ckpt) every K steps "
                                               "(0 = off).")),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--resume", help="Continue the run saved "
                                               "in a checkpoint (its settings are the default; "
                                               "ends pixel-identical to an unbroken run).")),
        *config_parameters(),
    ]
    generate.__signature__ = inspect.Signature(params)
    generate.__annotations__ = {p.name: p.annotation for p in params}
    generate.__doc__ = "Generate one image from a prompt (or repeat a PNG's run with --from)."
    return generate


app.command("generate")(_generate_command())


# ---------------------------------------------------------------------------------------------
# models, ui


@app.command("models")
def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List generators (with their options) and CLIP models."""
    from clipforge import registry
    from clipforge import pretrained

    gens = registry.describe()
    bundled = [{"name": n, "present": pretrained.BUNDLED[n].present}
               for n in pretrained.names("clip")]
    try:
        import open_clip

        pretrained = [f"{a}:{t}" for a, t in open_clip.list_pretrained()]
    except ImportError:
        pretrained = []
    if as_json:
        typer.echo(json.dumps({"generators": gens, "clip": {"bundled": bundled,
                                                            "open_clip": pretrained}},
                              default=str))
        return
    typer.echo("Generators (--generator NAME, --generator-options JSON):")
    for g in gens:
        opts = ", ".join(f"{k}={v!r}" for k, v in g["options"].items())
        typer.echo(f"  {g['name']:<10} {g['summary']}")
        typer.echo(f"  {'':<10} options: {opts or 'none'}{'  (' + g['note'] + ')' if g['note'] else ''}")
    typer.echo("\nBundled CLIP models (offline):")
    for b in bundled:
        typer.echo(f"  {b['name']}{'' if b['present'] else '  (missing: run scripts/make_bundled_models.py)'}")
    typer.echo(f"\nopen_clip pretrained models ({len(pretrained)}; downloaded on first use), e.g.:")
    for p in pretrained[:8]:
        typer.echo(f"  {p}")
    typer.echo("  ... also NAME:/path/to/weights, a folder in open_clip hub layout, hf-hub:ORG/REPO")


@app.command("ui")
def ui(host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes it)."),
       port: int = typer.Option(7860, help="Port."),
       auth: Optional[str] = typer.Option(None, help="Require login: USER:PASSWORD.")) -> None:
    """Launch the Gradio studio in the browser."""
    try:
        from clipforge.ui.app import launch
    except ImportError as e:
        _err(f"error: the studio needs gradio ({e}); run: pip install 'clipforge[ui]'")
        raise typer.Exit(EXIT_USAGE)
    launch(host=host, port=port, auth=auth)


@app.command("convert-vqgan")
def convert_vqgan(ckpt: Path = typer.Argument(..., help="taming-transformers .ckpt"),
                  config: Path = typer.Argument(..., help="its .yaml"),
                  out: Path = typer.Argument(..., help="new folder for the diffusers VQModel")) -> None:
    """Convert a taming-transformers VQGAN (.ckpt + .yaml) into a diffusers VQModel folder."""
    from clipforge.generators.vqgan import convert_taming_checkpoint

    try:
        folder = convert_taming_checkpoint(ckpt, config, out)
    except usage_errors() as e:
        _err(f"error: {e}")
        raise typer.Exit(EXIT_USAGE)
    _err(f"wrote {folder}; use it with --generator vqgan --generator-options "
         f"'{{\"model\": \"{folder}\", \"subfolder\": null}}'")
    typer.echo(str(folder))


def _register_optional_commands() -> None:
    """Commands defined next to the code they drive (training, batch)."""
    import importlib

    for module in ("clipforge.cli_train", "clipforge.batch"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(app)


_register_optional_commands()


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
