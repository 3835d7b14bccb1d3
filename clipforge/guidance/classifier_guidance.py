"""Classifier guidance as pure functions: fold a guide's gradient into a noise prediction.

A diffusion model predicts the noise ``eps`` in ``x_t = sqrt(a) * x0 + sqrt(1 - a) * eps``
(``a`` = alpha-bar at t), which gives the score ``-eps / sqrt(1 - a)``. Classifier guidance
(Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", sec. 4.2) adds the
gradient of a classifier's ``log p(y | x_t)`` to that score; with a loss to minimise in its place
(``loss = -log p``, here a CLIP loss on the clean-image estimate, as in Katherine Crowson's
CLIP-guided diffusion) the guided prediction is

    eps' = eps + sqrt(1 - a) * scale * g,      g = d loss / d x_t.

As in k-diffusion's ``make_cond_model_fn`` (``sample_clip_guided.py``), only the model's output
changes, so any sampler or scheduler then takes the step unchanged; the gradient comes as a
tensor or as a callable of x_t, its ``cond_fn``. Two steadying options from CLIP-guided diffusion
practice: ``normalize_grad`` divides ``g`` by its RMS per image, so ``scale`` is in units of the
noise prediction whatever the loss size; ``clamp_max`` caps the RMS of ``scale * g`` (Disco
Diffusion's ``clamp_max``). Nothing here runs a model; :mod:`clipforge.generators.diffusion`
does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

GradFn = Callable[[Tensor], Tensor]


def per_image_rms(x: Tensor) -> Tensor:
    """Root mean square of each image of a batch, shaped to broadcast against it.

    Args:
        x: a batch.

    Shape:
        (B, ...) -> (B, 1, ..., 1), >= 0.
    """
    return x.pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True).sqrt()


def predict_x0(x: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The clean-image estimate ``(x_t - sqrt(1 - a) * eps) / sqrt(a)`` of a noise prediction.

    Args:
        x: the noisy sample x_t.
        eps: the model's noise prediction at x_t.
        alpha_bar: alpha-bar at t, in (0, 1]; a scalar or one per image.

    Shape:
        x, eps (B, C, H, W) in model space (about [-1, 1] for pixel models) -> (B, C, H, W).
    """
    a = _per_image(alpha_bar, x)
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def guided_eps(eps: Tensor, x: Tensor, alpha_bar: Tensor | float, grad: Tensor | GradFn, *,
               scale: float = 1.0, normalize_grad: bool = True,
               clamp_max: float = 0.0) -> Tensor:
    """The noise prediction with the guide's gradient folded in: ``eps + sqrt(1 - a) * scale * g``.

    Args:
        eps: the model's noise prediction at x_t (detached: the result is a new tensor).
        x: the noisy sample x_t the gradient is taken at.
        alpha_bar: alpha-bar at t, in (0, 1]; a scalar or one per image.
        grad: ``d loss / d x_t`` (lower loss = more like the prompt), or a callable that takes
            x_t and returns it; a callable is not called when ``scale`` is 0. Non-finite entries
            count as 0; the gradient is used in float32.
        scale: guidance strength (0 = the model alone).
        normalize_grad: divide the gradient by its RMS per image first.
        clamp_max: cap on the RMS per image of ``scale * g``; 0 = no cap.

    Shape:
        eps, x, grad (B, C, H, W) -> (B, C, H, W) like ``eps`` (float32 where grad is used).
    """
    if scale == 0:
        return eps
    g = grad(x) if callable(grad) else grad
    g = torch.nan_to_num(g.float(), 0.0, 0.0, 0.0)
    if normalize_grad:
        g = g / per_image_rms(g).clamp(min=1e-12)
    g = g * scale
    if clamp_max:
        g = g * (clamp_max / per_image_rms(g).clamp(min=1e-12)).clamp(max=1)
    return eps + (1 - _per_image(alpha_bar, g)).sqrt() * g


def _per_image(value: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or (B,) value as a tensor that broadcasts over ``like`` (B, ...)."""
    v = torch.as_tensor(value, device=like.device)
    if not v.is_floating_point():
        v = v.float()
    return v.view(-1, *[1] * (like.dim() - 1)) if v.dim() == 1 else v
