"""Judge generated images against their prompts: CLIP score and zero-shot R-precision.

Scores come from a *judge* CLIP. Judging with the model that guided the images rewards
adversarial images (the guide is sure, the eye is not), so it is allowed but warned about
(:class:`SameModelWarning`); the offline default judge is the bundled ``shapes-judge``, trained
independently of the ``shapes`` guide.

- CLIP score: ``100 * max(cos(image, prompt), 0)`` per image (Hessel et al. 2021, "CLIPScore",
  as torchmetrics scales it), with CLIP of Radford et al. 2021.
- Zero-shot R-precision: the fraction of images whose own prompt ranks in the top ``k`` among
  the candidate prompts (Park et al. 2021, "Benchmark for compositional text-to-image
  synthesis"; R=1 by default).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from clipforge.errors import UsageError

DEFAULT_JUDGE = "shapes-judge"


class SameModelWarning(UserWarning):
    """The judge is also a guide: its scores overrate images optimised against it."""


@dataclass(frozen=True)
class Evaluation:
    """Scores of a set of images under one judge.

    Attributes:
        judge: the judge's spec or name.
        clip_scores: per-image CLIP score in [0, 100].
        clip_score: their mean.
        r_precision: fraction of images whose prompt ranks top-k among the candidates, or None
            when there were fewer than two candidates.
        k: the k of the R-precision.
    """

    judge: str
    clip_scores: list[float]
    clip_score: float
    r_precision: float | None
    k: int = 1


def load_judge(judge: Any, device: str = "cpu") -> Any:
    """An Embedder from a spec (``shapes-judge``, a folder, ``ViT-B-32:tag``) or the object itself.

    Args:
        judge: a spec string accepted by ``load_embedder``, or an Embedder.
        device: where to load it.
    """
    if isinstance(judge, str):
        from clipforge.guidance.clip_models import load_embedder

        return load_embedder(judge, device=device)
    return judge


def _name(model: Any) -> str:
    if isinstance(model, str):
        return model.split("@")[0].strip()
    return str(getattr(model, "name", id(model)))


def check_judge(judge: Any, guides: Any = None) -> None:
    """Warn (:class:`SameModelWarning`) when the judge is one of the guides.

    Args:
        judge: spec or Embedder.
        guides: spec, Embedder, or a list of them (comma-separated specs are split).
    """
    if guides is None:
        return
    if isinstance(guides, str):
        guides = [g for g in guides.split(",") if g.strip()]
    elif not isinstance(guides, (list, tuple)):
        guides = [guides]
    jn = _name(judge)
    for g in guides:
        if g is judge or _name(g) == jn:
            warnings.warn(f"judge {jn!r} also guided these images: its scores reward adversarial "
                          "images; judge with an independently trained model (e.g. "
                          f"{DEFAULT_JUDGE!r}) for a fair score", SameModelWarning, stacklevel=3)
            return


def _prompts(prompts: str | Sequence[str], n: int) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts] * n
    prompts = list(prompts)
    if len(prompts) != n:
        raise UsageError(f"prompts: {len(prompts)} prompts for {n} images (give one, or one per image)")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise UsageError("prompt is empty")
    return prompts


def _check_images(images) -> None:
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise UsageError(f"images: expected a (N, 3, H, W) tensor in [0, 1], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if images.shape[0] == 0:
        raise UsageError("images: no images given")


def clip_score(images, prompts: str | Sequence[str], judge: Any = DEFAULT_JUDGE, *,
               guide: Any = None, device: str = "cpu"):
    """CLIP score of each image against its prompt: ``100 * max(cos, 0)`` (Hessel et al. 2021).

    Args:
        images: the images.
        prompts: one prompt for all images, or one per image.
        judge: spec or Embedder that scores.
        guide: the model(s) that guided the images; a judge among them gets a warning.
        device: where to load a judge given by spec.

    Shape:
        images: (N, 3, H, W) in [0, 1]; returns (N,) float in [0, 100].
    """
    import torch

    _check_images(images)
    prompts = _prompts(prompts, images.shape[0])
    check_judge(judge, guide)
    emb = load_judge(judge, device)
    with torch.no_grad():
        from clipforge.guidance.embedders import encode_images

        img = encode_images(emb, images.to(_device_of(emb)))
        uniq = list(dict.fromkeys(prompts))
        txt = emb.encode_text(uniq)
        idx = torch.tensor([uniq.index(p) for p in prompts], device=txt.device)
        cos = (img * txt[idx]).sum(-1)
    return (100 * cos.clamp(min=0)).float().cpu()


def r_precision(images, prompts: str | Sequence[str], judge: Any = DEFAULT_JUDGE, *,
                candidates: Sequence[str] | None = None, k: int = 1, guide: Any = None,
                device: str = "cpu") -> float:
    """Zero-shot R-precision: the fraction of images whose prompt is among the judge's top ``k``.

    Args:
        images: the images.
        prompts: one per image (or one for all, then ``candidates`` must hold others).
        judge: spec or Embedder.
        candidates: prompts to rank against (default: the distinct prompts); each image's own
            prompt is added when missing.
        k: how high the right prompt must rank.
        guide: the model(s) that guided the images; a judge among them gets a warning.
        device: where to load a judge given by spec.

    Shape:
        images: (N, 3, H, W) in [0, 1].
    """
    import torch

    _check_images(images)
    prompts = _prompts(prompts, images.shape[0])
    cands = list(dict.fromkeys(list(candidates or []) + prompts))
    if len(cands) < 2:
        raise UsageError("candidates: R-precision needs at least 2 distinct prompts to rank "
                         "(give several prompts or --candidates)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(cands):
        raise UsageError(f"k: {k!r} is out of range; allowed: 1 to {len(cands) - 1}")
    check_judge(judge, guide)
    emb = load_judge(judge, device)
    with torch.no_grad():
        from clipforge.guidance.embedders import encode_images

        img = encode_images(emb, images.to(_device_of(emb)))
        txt = emb.encode_text(cands)
        top = (img @ txt.t()).topk(k, dim=1).indices.cpu()
    truth = torch.tensor([cands.index(p) for p in prompts])
    return float((top == truth[:, None]).any(1).float().mean())


def evaluate(images, prompts: str | Sequence[str], judge: Any = DEFAULT_JUDGE, *,
             candidates: Sequence[str] | None = None, k: int = 1, guide: Any = None,
             device: str = "cpu") -> Evaluation:
    """CLIP score and (when there is something to rank against) R-precision under one judge.

    Args:
        images: the images.
        prompts: one for all, or one per image.
        judge: spec or Embedder.
        candidates: extra prompts for R-precision.
        k: top-k of the R-precision.
        guide: the model(s) that guided the images (a judge among them gets a warning).
        device: where to load a judge given by spec.

    Shape:
        images: (N, 3, H, W) in [0, 1].
    """
    _check_images(images)
    plist = _prompts(prompts, images.shape[0])
    check_judge(judge, guide)
    emb = load_judge(judge, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SameModelWarning)  # warned once above
        scores = clip_score(images, plist, emb)
        cands = list(dict.fromkeys(list(candidates or []) + plist))
        rp = r_precision(images, plist, emb, candidates=candidates, k=k) \
            if len(cands) > k else None
    name = judge if isinstance(judge, str) else _name(judge)
    return Evaluation(name, scores.tolist(), float(scores.mean()), rp, k)


def _device_of(emb: Any):
    model = getattr(emb, "model", None)
    if model is not None:
        try:
            return next(model.parameters()).device
        except (StopIteration, AttributeError, TypeError):
            pass
    return "cpu"
