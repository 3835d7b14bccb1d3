"""The contrastive loss of CLIP, with several true captions per image allowed.

A symmetric cross-entropy over the N x N image-text similarity matrix of a batch, scaled by
the temperature. When several captions in a batch are true of one image (the shapes set
repeats captions), the targets are spread over all of them instead of the diagonal only, so
true pairs are not pushed apart; with distinct captions this is exactly CLIP's loss
(Radford et al. 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor, match: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the image-text similarity matrix (Radford et al. 2021).

    Args:
        image_features: unit-length image embeddings.
        text_features: unit-length text embeddings (row i is the caption of image i).
        logit_scale: the temperature's inverse (already exponentiated), a scalar.
        match: optional bool matrix, ``match[i, j]`` True when caption j is true of image i;
            targets are then spread uniformly over the true pairs. None means the identity
            (CLIP's loss exactly).

    Shape:
        image_features, text_features: (N, D); match: (N, N); returns a scalar.
    """
    logits = logit_scale * image_features @ text_features.t()
    if match is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    t = match.to(logits.dtype)
    t_img = t / t.sum(1, keepdim=True)
    t_txt = t.t() / t.t().sum(1, keepdim=True)
    loss_i = -(t_img * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_txt * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


__all__ = ["contrastive_loss"]
