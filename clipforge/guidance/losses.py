"""Loss terms of CLIP guidance: pure functions of tensors, no state.

The spherical distance is the one popularised by Katherine Crowson's VQGAN+CLIP and
CLIP-guided diffusion notebooks; the total-variation term is Rudin, Osher and Fatemi (1992).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def spherical_dist_loss(x: Tensor, y: Tensor) -> Tensor:
    """Half the squared great-circle distance between L2-normalized embeddings.

    Equals ``2 * arcsin(|x - y| / 2) ** 2``, i.e. ``theta ** 2 / 2`` for the angle ``theta``
    between the unit vectors: 0 for equal directions, ``pi**2 / 2`` for opposite ones.

    Args:
        x: embeddings, normalized along the last dim inside this function.
        y: embeddings broadcastable against ``x``.

    Shape:
        x: (..., D), y: (..., D) -> (...)
    """
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def tv_loss(image: Tensor) -> Tensor:
    """Mean squared total variation (anisotropic, forward differences) per image.

    Args:
        image: batch of images, any range.

    Shape:
        (B, C, H, W) -> (B,)
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))


def range_loss(image: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Mean squared distance of pixels outside ``[low, high]`` back to the interval, per image.

    Shape:
        (B, C, H, W) -> (B,)
    """
    return (image - image.clamp(low, high)).pow(2).mean(dim=(1, 2, 3))


def init_image_loss(image: Tensor, init: Tensor) -> Tensor:
    """Mean squared error to an init image, per image (LPIPS is not used).

    Shape:
        image: (B, C, H, W), init: (B or 1, C, H, W) -> (B,)
    """
    return (image - init).pow(2).mean(dim=(1, 2, 3))


__all__ = ["spherical_dist_loss", "tv_loss", "range_loss", "init_image_loss"]
