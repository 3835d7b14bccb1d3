"""Guide: embedders x prompts x cutouts -> one differentiable loss of an image.

Prompt embeddings (text and image) are computed once, at construction. At each call the
image is cut into augmented crops, every embedder embeds them, and each prompt adds its
weight times the mean spherical distance (a negative weight steers away). Regularizers are
added with their own weights. The loss parts are returned as tensors (no host sync).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from clipforge.guidance.augment import Cutouts
from clipforge.guidance.embedders import ClipEmbedder, Ensemble
from clipforge.guidance.losses import init_image_loss, range_loss, spherical_dist_loss, tv_loss
from clipforge.guidance.prompts import Prompt
from clipforge.precision import autocast, resolve_precision


class Guide:
    """Scores images against weighted, scheduled prompts under one or more CLIP models.

    Args:
        embedders: a ClipEmbedder, an Ensemble, or a list of ClipEmbedders (weight 1 each).
        prompts: text and image prompts; image prompts hold a path or a (1, 3, H, W) tensor.
        cutouts: the crop maker (default: 32 cutouts at the largest model input size).
        tv_weight: weight of the total-variation regularizer.
        range_weight: weight of the loss on pixels outside [0, 1].
        init_image: (1, 3, H, W) in [0, 1] for the init-image MSE loss, or None.
        init_weight: weight of that loss.
        generator: CPU ``torch.Generator`` for the cutouts (explicit randomness).
        precision: ``auto``, ``fp32`` or ``bf16``: the arithmetic of the CLIP forward and
            backward (:func:`clipforge.precision.resolve_precision` on the models' device;
            cutouts, distances and regularizers stay fp32). The resolved one is ``.precision``.
    """

    def __init__(self, embedders: ClipEmbedder | Ensemble | Sequence[ClipEmbedder],
                 prompts: Sequence[Prompt], cutouts: Cutouts | None = None, *,
                 tv_weight: float = 0.0, range_weight: float = 0.0,
                 init_image: Tensor | None = None, init_weight: float = 0.0,
                 generator: torch.Generator | None = None, precision: str = "auto"):
        if isinstance(embedders, ClipEmbedder):
            embedders = Ensemble(((embedders, 1.0),))
        elif not isinstance(embedders, Ensemble):
            embedders = Ensemble(tuple((e, 1.0) for e in embedders))
        if not embedders.members:
            raise ValueError("Guide: at least one embedder is needed")
        if not prompts:
            raise ValueError("Guide: at least one prompt is needed")
        self.ensemble = embedders
        self.device = embedders.members[0][0].device
        self.precision = resolve_precision(precision, self.device)
        self.prompts = list(prompts)
        self.cutouts = cutouts or Cutouts(embedders.image_size, 32)
        self.tv_weight, self.range_weight = tv_weight, range_weight
        self.init_weight = init_weight
        self.init_image = init_image
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.labels = _unique_labels(self.prompts)
        images = self._prompt_images()  # read each image file once, whatever the model count
        # targets[m][p]: prompt p's embedding under model m, (D,)
        self.targets = [self._embed_prompts(emb, images) for emb, _ in embedders.members]

    def _prompt_images(self) -> dict[int, Tensor]:
        """Image prompts as (1, 3, H, W) tensors, keyed by prompt position."""
        from clipforge.images import load_image

        images = {}
        for i, p in enumerate(self.prompts):
            if p.image is not None:
                img = load_image(p.image, field="image_prompts") if isinstance(p.image, str) \
                    else p.image
                images[i] = img if img.dim() == 4 else img.unsqueeze(0)
        return images

    @torch.no_grad()
    def _embed_prompts(self, emb: ClipEmbedder, images: dict[int, Tensor]) -> list[Tensor]:
        texts = [p.text for p in self.prompts if p.text is not None]
        text_emb = iter(emb.encode_text(texts)) if texts else iter(())
        return [next(text_emb) if i not in images else
                emb.encode_image(images[i].to(emb.device, torch.float32))[0]
                for i in range(len(self.prompts))]

    def loss(self, image: Tensor, t: float = 0.0, *,
             cutn: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss of ``image`` at progress ``t`` in [0, 1], and its named parts.

        Args:
            image: the image to score.
            t: progress of the run, for scheduled prompt weights.
            cutn: cutouts for this call (default: the Cutouts' own ``cutn``).

        Shape:
            image (B, 3, H, W) in [0, 1] -> total () and parts {name: ()}, batch-averaged.
        """
        b = image.shape[0]
        cuts = self.cutouts(image, self.generator, n=cutn)
        parts: dict[str, Tensor] = {}
        for (emb, model_w), targets in zip(self.ensemble.members, self.targets):
            with autocast(self.precision, self.device):
                feats = emb.encode_image(cuts).view(b, cuts.shape[0] // b, -1)   # (B, N, D)
            for p, label, target in zip(self.prompts, self.labels, targets):
                w = p.weight_at(t) * model_w
                if w == 0:
                    continue
                d = spherical_dist_loss(feats, target.to(feats.dtype)).mean()
                parts[label] = parts.get(label, 0) + w * d
        if self.tv_weight:
            parts["tv"] = self.tv_weight * tv_loss(image).mean()
        if self.range_weight:
            parts["range"] = self.range_weight * range_loss(image).mean()
        if self.init_weight and self.init_image is not None:
            parts["init"] = self.init_weight * init_image_loss(image, self.init_image).mean()
        if not parts:  # every prompt scheduled off at this t
            parts["zero"] = image.sum() * 0.0
        total = torch.stack(list(parts.values())).sum()
        return total, parts

    __call__ = loss


def _unique_labels(prompts: Sequence[Prompt]) -> list[str]:
    seen: dict[str, int] = {}
    labels = []
    for p in prompts:
        base = p.label
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base} #{seen[base]}")
    return labels
