"""Adversarial training examples for CLIP: small worst-case changes of the training images.

A CLIP trained only on clean images has gradients that point at invisible high-frequency
patterns; guiding an image by them makes adversarial images (the guide is sure, nobody else
is). Training on images perturbed, within an L-infinity ball of radius ``eps``, so as to raise
the contrastive loss makes the model robust, and robust models have perceptually aligned
gradients: following them changes what a person sees.
Origin: projected gradient descent (Madry et al. 2018); "fast is better than free", one signed
step from a random start (Wong, Rice & Kolter 2020); robust CLIPs with aligned gradients:
TeCoA (Mao et al. 2023), FARE (Schlarmann et al. 2024), CLIPAG (Ganz & Elad 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from clipforge.errors import UsageError
from clipforge.training.losses import contrastive_loss


@dataclass(frozen=True)
class Adversarial:
    """Makes adversarial versions of a batch by projected gradient ascent on a loss.

    Args:
        eps: radius of the L-infinity ball, in [0, 1] pixel units (4/255 is common).
        steps: gradient steps (1 with a random start is fast adversarial training).
        step_size: size of each signed step (default ``1.25 * eps / steps``).
        fraction: share of each batch that is perturbed (the rest stays clean).
    """

    eps: float = 4 / 255
    steps: int = 1
    step_size: float | None = None
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.eps <= 1 and self.steps >= 1 and 0 < self.fraction <= 1):
            raise UsageError(f"Adversarial: need 0 < eps <= 1, steps >= 1 and 0 < fraction "
                             f"<= 1; got {self.eps}, {self.steps}, {self.fraction}")

    def __call__(self, x: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor],
                 g: torch.Generator) -> torch.Tensor:
        """Perturb the first ``fraction`` of the batch to raise ``loss_of(images)``.

        Args:
            x: the (augmented) training images.
            loss_of: the loss of a whole batch of images (the other inputs held fixed).
            g: generator for the random start.

        Shape:
            x: (N, 3, H, W) in [0, 1] -> the same, in [0, 1], detached.
        """
        k = max(1, round(self.fraction * x.shape[0]))
        return _perturb(x, loss_of, g, k, self.eps, self.steps,
                        self.step_size if self.step_size is not None else 1.25 * self.eps / self.steps)


def _perturb(x, loss_of, g, k: int, eps: float, steps: int, alpha: float) -> torch.Tensor:
    """PGD on the first ``k`` images of ``x`` (the gradient is taken for the pixels only)."""
    x = x.detach()
    delta = ((torch.rand(x[:k].shape, generator=g) * 2 - 1).to(x) * eps).requires_grad_(True)
    for _ in range(steps):
        adv = torch.cat([(x[:k] + delta).clamp(0, 1), x[k:]])
        (grad,) = torch.autograd.grad(loss_of(adv), delta)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps).detach().requires_grad_(True)
    return torch.cat([(x[:k] + delta).clamp(0, 1), x[k:]]).detach()


def attack(adversarial: Adversarial, model, embedder, x, token_ids, match, g):
    """Adversarial versions of a CLIP training batch: the text side and the weights are fixed.

    Args:
        adversarial: the attack's settings.
        model: the open_clip model being trained.
        embedder: a ClipEmbedder over it (resizes and normalizes).
        x: the batch's (augmented) images.
        token_ids: the batch's captions, tokenized.
        match: which caption is true of which image (see ``contrastive_loss``), or None.
        g: generator for the random start.

    Shape:
        x: (N, 3, H, W) in [0, 1] -> the same.
    """
    with torch.no_grad():
        txt = F.normalize(model.encode_text(token_ids), dim=-1)
        scale = model.logit_scale.exp()
    wanted = [p for p in model.parameters() if p.requires_grad]
    for p in wanted:  # no weight gradients during the attack: only the pixels' are needed
        p.requires_grad_(False)
    try:
        return adversarial(x, lambda im: contrastive_loss(embedder.encode_image(im), txt, scale,
                                                          match), g)
    finally:
        for p in wanted:
            p.requires_grad_(True)


__all__ = ["Adversarial", "attack"]
