"""Training augmentation for CLIP: random resized crops, flips, brightness and noise, batched.

Models trained on augmented, noisy images are more robust, and robust models give
perceptually aligned gradients, which CLIP guidance needs (see DESIGN.md, "Guidance that
transfers"). Parameters are drawn per image from the generator passed in, then applied in
one ``grid_sample``, so the same generator state replays the same augmentation (a resumed
training run continues exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batched training augmentation; all randomness from the generator passed in.

    Args:
        scale: range of the crop's area as a fraction of the image (random resized crop).
        ratio: range of the crop's aspect ratio (log-uniform).
        flip: probability of a horizontal flip.
        noise: maximum std of additive Gaussian noise (each image draws its own in [0, noise]).
        brightness: maximum relative brightness change.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    noise: float = 0.06
    brightness: float = 0.1

    def __call__(self, x: torch.Tensor, g: torch.Generator,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            x: images.
            g: generator.
            keep: optional (N, 2) points (x, y) in [0, 1] that each crop must contain.

        Shape:
            x: (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1].
        """
        n = x.shape[0]
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, generator=g)
        lr = torch.empty(n).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
        ar = lr.exp()
        w = (area * ar).sqrt().clamp(max=1.0)  # crop width / image width
        h = (area / ar).sqrt().clamp(max=1.0)
        u = torch.rand(n, 2, generator=g)
        # crop centre in [-1, 1] coordinates, keeping the crop inside the image
        lo_x, hi_x = -(1 - w), (1 - w)
        lo_y, hi_y = -(1 - h), (1 - h)
        if keep is not None:  # the crop must contain the point: centre within +-(size - margin)
            kx, ky = keep[:, 0] * 2 - 1, keep[:, 1] * 2 - 1
            lo_x, hi_x = torch.maximum(lo_x, kx - 0.7 * w), torch.minimum(hi_x, kx + 0.7 * w)
            lo_y, hi_y = torch.maximum(lo_y, ky - 0.7 * h), torch.minimum(hi_y, ky + 0.7 * h)
            hi_x, hi_y = torch.maximum(hi_x, lo_x), torch.maximum(hi_y, lo_y)
        cx = lo_x + (hi_x - lo_x) * u[:, 0]
        cy = lo_y + (hi_y - lo_y) * u[:, 1]
        flip = torch.where(torch.rand(n, generator=g) < self.flip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = 1 + self.brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        sigma = self.noise * torch.rand(n, 1, 1, 1, generator=g)
        y = y * bright.to(y) + sigma.to(y) * torch.randn(y.shape, generator=g).to(y)
        return y.clamp(0, 1)


__all__ = ["Augment"]
