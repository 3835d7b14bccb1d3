"""A clamp to [0, 1] whose gradient still pulls out-of-range pixels back in (vae and vqgan).

An autoencoder's decoder can overshoot [-1, 1]. A plain ``clamp`` zeroes the gradient of every
clipped pixel, so the optimizer can never pull it back; this one keeps the part of the gradient
that points inward. Shared by the ``vae`` and ``vqgan`` generators, whose decoders both
overshoot. Origin: ``ClampWithGrad`` of the VQGAN+CLIP notebooks (Crowson 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose backward passes the gradient where it would move a value back into range."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # descent moves x by -grad: outside the range keep only the inward-pointing part
        keep = (x >= ctx.lo) & (x <= ctx.hi) | ((x < ctx.lo) & (grad < 0)) | \
            ((x > ctx.hi) & (grad > 0))
        return grad * keep, None, None


def clamp_with_grad(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """``x.clamp(lo, hi)`` whose gradient is not zero outside the range when it points inward.

    Args:
        x: any tensor.
        lo: lower bound.
        hi: upper bound.

    Shape:
        any -> same shape, values in [lo, hi].
    """
    return _ClampWithGrad.apply(x, lo, hi)
