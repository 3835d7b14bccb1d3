"""``clipforge models`` (what can generate and guide) and ``clipforge convert-vqgan``.

``models`` lists the registered generators with their options, the bundled CLIP models of
:mod:`clipforge.pretrained` and open_clip's pretrained tags; ``convert-vqgan`` turns a
taming-transformers VQGAN into a diffusers folder the ``vqgan`` generator loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipforge.cli.common import echo_err, exits, quiet_option


def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           quiet: bool = quiet_option()) -> None:
    """List generators (with their options) and CLIP models (imports no torch: well under 1 s)."""
    from clipforge import pretrained, registry
    from clipforge.guidance.open_clip_tags import pretrained_tags

    gens = registry.describe(imports=False)
    bundled = [{"name": n, "present": pretrained.BUNDLED[n].present}
               for n in pretrained.names("clip")]
    models_for_generators = [{"name": m.name, "kind": m.kind, "summary": m.summary,
                              "present": m.present, "recipe": m.recipe}
                             for m in pretrained.BUNDLED.values() if m.kind != "clip"]
    hub = [f"{a}:{t}" for a, t in pretrained_tags()]
    if as_json:
        typer.echo(json.dumps({"generators": gens, "clip": {"bundled": bundled,
                                                            "open_clip": hub},
                               "generator_models": models_for_generators}, default=str))
        return
    typer.echo("Generators (--generator NAME, --generator-options JSON):")
    for g in gens:
        opts = ", ".join(f"{k}={v!r}" for k, v in g["options"].items())
        note = f"  ({g['note']})" if g["note"] else ""
        typer.echo(f"  {g['name']:<10} {g['summary']}")
        typer.echo(f"  {'':<10} options: {opts or 'none'}{note}")
    typer.echo("\nBundled CLIP models (offline):")
    for b in bundled:
        missing = "" if b["present"] else "  (missing: run scripts/make_bundled_models.py)"
        typer.echo(f"  {b['name']}{missing}")
    typer.echo("\nBundled generator models (offline; --generator-options '{\"model\": NAME}'):")
    for m in models_for_generators:
        missing = "" if m["present"] else f"  (missing: run {m['recipe']})"
        typer.echo(f"  {m['name']:<12} {m['kind']:<12} {m['summary']}{missing}")
    typer.echo(f"\nopen_clip pretrained models ({len(hub)}; downloaded on first use), e.g.:")
    for p in hub[:8]:
        typer.echo(f"  {p}")
    typer.echo("  ... also NAME:/path/to/weights, a folder in open_clip hub layout, "
               "hf-hub:ORG/REPO")


def convert_vqgan(ckpt: Path = typer.Argument(..., help="taming-transformers .ckpt"),
                  config: Path = typer.Argument(..., help="its .yaml"),
                  out: Path = typer.Argument(..., help="new folder for the diffusers VQModel"),
                  quiet: bool = quiet_option()) -> None:
    """Convert a taming-transformers VQGAN (.ckpt + .yaml) into a diffusers VQModel folder."""
    with exits():
        from clipforge.generators.taming import convert_taming_checkpoint

        folder = convert_taming_checkpoint(ckpt, config, out)
    if not quiet:
        echo_err(f"wrote {folder}; use it with --generator vqgan --generator-options "
                 f"'{{\"model\": \"{folder}\", \"subfolder\": null}}'")
    typer.echo(str(folder))


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``convert-vqgan`` to the app.

    Args:
        app: the ``clipforge`` Typer app.
    """
    app.command("models")(models)
    app.command("convert-vqgan")(convert_vqgan)
