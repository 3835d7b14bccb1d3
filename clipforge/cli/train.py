"""``clipforge train-clip``, ``classify`` and ``score``: train a small CLIP and use one to judge.

The commands call :mod:`clipforge.training` and :mod:`clipforge.evaluate`; training progress
comes back through ``train(..., callback=)`` and is drawn with the shared
:class:`~clipforge.cli.common.ProgressBars`. Exit codes come from the one mapper
(:func:`~clipforge.cli.common.exits`): 2 bad input (bad data, unknown model, unreadable
image), 1 a runtime failure, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from clipforge.cli.common import ProgressBars, exits, loading, quiet_option
from clipforge.errors import UsageError
from clipforge.fields import check_text, is_blank


# the parameters classify and score share
IMAGES = typer.Argument(..., help="Image files.")
AS_JSON = typer.Option(False, "--json", help="One JSON object per line per image.")


def _labels(text: str) -> list[str]:
    labels = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if len(labels) < 2:
        raise UsageError("--labels: give at least two comma-separated labels, e.g. \"cat,dog\"",
                         "labels")
    return labels


def _load_images(paths: List[Path]):
    from clipforge.images import load_image

    return [load_image(p, field="image") for p in paths]


def train_clip(
    data: str = typer.Argument(..., help="`shapes`, a folder of images with same-name .txt "
                               "captions, or a .csv/.jsonl of (path, caption)."),
    out: Path = typer.Option(..., "--out", help="Output folder (open_clip hub layout) or a "
                             ".safetensors file."),
    config: str = typer.Option("shapes-vit-s", "--config", help="Model config: shapes-vit-s, "
                               "shapes-vit-xs, shapes-rn-s, shapes-rn-xs, tiny, an open_clip "
                               "name (ViT-B-32), or a JSON file."),
    steps: int = typer.Option(500, "--steps", min=1, max=10_000_000, help="Optimizer steps."),
    batch_size: int = typer.Option(128, "--batch-size", min=2, max=65536, help="Pairs per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (> 0)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of initialisation, data and "
                             "augmentation."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Checkpoint to continue from."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint file "
                                              "(default: OUT.ckpt.pt)."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", min=0,
                                         help="Save a checkpoint every K steps (0: at the end)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, "
                               "cuda:N; --resume may continue on another device."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast; weights "
                                  "stay fp32) or auto (bf16 where the CPU or GPU has bf16 units)."),
    quiet: bool = quiet_option(),
) -> None:
    """Train a small CLIP contrastively (Radford et al. 2021) and save it in open_clip's layout."""
    with exits():
        from clipforge.runner import resolve_device
        from clipforge.targets import check_file, check_folder
        from clipforge.training.model_io import save_model
        from clipforge.training.trainer import train

        if out.suffix.lower() == ".safetensors":  # checked before training, not after
            check_file(out, suffix=".safetensors", overwrite=True)
        else:
            check_folder(out)
        ckpt = checkpoint or out.with_name(out.name + ".ckpt.pt")
        check_folder(ckpt.parent, field="checkpoint")
        with ProgressBars(quiet=quiet or not sys.stderr.isatty()) as bars:
            bar = bars.add("training", total=steps)
            result = train(data, config, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           resume=resume, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                           device=resolve_device(device), precision=precision,
                           callback=lambda step, loss: bars.update(
                               bar, completed=step, info=f"loss {loss:.3f}"))
        prov = {"trained_on": str(data), "seed": seed, "steps": result.step,
                "batch_size": batch_size, "lr": lr, "config": config, "precision": precision}
        if result.zero_shot:
            prov["zero_shot"] = result.zero_shot
        path = save_model(result.model, result.model_cfg, out,
                          preprocess_cfg=result.preprocess_cfg, provenance=prov)
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        typer.echo(f"trained {result.step} steps in {result.seconds:.1f} s; final loss {last}; "
                   f"temperature {result.logit_scale:.1f}")
        if result.zero_shot:
            z = result.zero_shot
            typer.echo(f"zero-shot on shapes val ({z['n']}): colour {z['colour']:.1%}, shape "
                       f"{z['shape']:.1%}, colour+shape {z['colour+shape']:.1%}")
        typer.echo(f"saved {path} (checkpoint {ckpt})")


def classify(
    images: List[Path] = IMAGES,
    labels: str = typer.Option(..., "--labels", help="Comma-separated labels, e.g. \"cat,dog\"."),
    template: str = typer.Option("a photo of a {}", "--template", help="Prompt template; {} is "
                                 "replaced by each label."),
    clip: str = typer.Option("shapes", "--clip", help="CLIP model spec (see `clipforge models`)."),
    as_json: bool = AS_JSON,
    quiet: bool = quiet_option(),
) -> None:
    """Zero-shot classify images: each label's probability, best first."""
    with exits():
        import torch

        from clipforge.guidance.clip_models import load_embedder
        from clipforge.training.zeroshot import check_template, text_classifier

        labs = _labels(labels)
        check_template(template)
        pics = _load_images(images)
        with loading(f"CLIP {clip}", quiet):
            emb = load_embedder(clip)
        with torch.no_grad():
            text = text_classifier(emb, labs, template)
            for path, x in zip(images, pics):
                probs = (100 * emb.encode_image(x) @ text.t()).softmax(-1)[0].tolist()
                ranked = sorted(zip(labs, probs), key=lambda lp: -lp[1])
                if as_json:
                    typer.echo(json.dumps({"image": str(path),
                                           "probs": {lab: round(p, 6) for lab, p in ranked}},
                                          ensure_ascii=False))
                else:
                    typer.echo(str(path))
                    for lab, p in ranked:
                        typer.echo(f"  {p:7.2%}  {lab}")


def score(
    images: List[Path] = IMAGES,
    prompt: str = typer.Option(..., "--prompt", help="The prompt the images were made from."),
    judge: str = typer.Option("shapes-judge", "--judge", help="CLIP model that scores; use one "
                              "that did not guide the images."),
    guide: Optional[str] = typer.Option(None, "--guide", help="Model(s) that guided the images "
                                        "(comma-separated); judging with one of them warns."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Comma-separated other "
                                             "prompts: also report zero-shot R-precision."),
    as_json: bool = AS_JSON,
    quiet: bool = quiet_option(),
) -> None:
    """CLIP score (100 x cosine) of images against a prompt under a judge model."""
    with exits():
        import warnings

        from clipforge.evaluate import (SameModelWarning, check_judge, clip_score, load_judge,
                                        r_precision)

        check_text("prompt", prompt)  # as generate checks it: NUL, lone surrogates
        if is_blank(prompt):
            raise UsageError("--prompt: prompt is empty", "prompt")
        pics = _load_images(images)
        check_judge(judge, guide)
        with loading(f"judge {judge}", quiet):
            emb = load_judge(judge)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SameModelWarning)  # warned once above
            scores = [float(clip_score(x, prompt, emb)[0]) for x in pics]
            cands = [c.strip() for c in (candidates or "").split(",") if c.strip()]
            hits = None
            if cands:  # R-precision image by image (sizes may differ)
                hits = [r_precision(x, prompt, emb, candidates=cands) for x in pics]
        for i, (path, s) in enumerate(zip(images, scores)):
            if as_json:
                row = {"image": str(path), "clip_score": round(s, 4), "judge": judge}
                if hits is not None:
                    row["top1"] = bool(hits[i])
                typer.echo(json.dumps(row, ensure_ascii=False))
            else:
                extra = "" if hits is None else ("  top-1" if hits[i] else "  not top-1")
                typer.echo(f"{s:6.2f}  {path}{extra}")
        if not as_json:
            line = f"mean CLIP score {sum(scores) / len(scores):.2f} (judge {judge})"
            if hits is not None:
                line += f"; R-precision {sum(hits) / len(hits):.1%} over {len(cands) + 1} prompts"
            typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add ``train-clip``, ``classify`` and ``score`` to the app.

    Args:
        app: the ``clipforge`` Typer app.
    """
    app.command("train-clip")(train_clip)
    app.command("classify")(classify)
    app.command("score")(score)
