"""Training augmentation for CLIP: crops, flips, rotation, perspective, blur, blotches, noise.

Models trained on augmented, noisy images are more robust, and robust models give
perceptually aligned gradients, which CLIP guidance needs (see DESIGN.md, "Guidance that
transfers"). The geometric part can match the guide's own cutouts (random crops of the image,
flips, a few degrees of rotation and some perspective: :class:`clipforge.guidance.augment.
Cutouts`), so the guide is trained on what it will be shown. Low-frequency colour
**blotches** and blur teach a model (the judge above all) to read a shape from its outline, not
from its texture. Parameters are drawn per image from the generator passed in and applied in
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
        rotation: largest rotation, radians (0 = none).
        perspective: largest perspective coefficient (0 = affine only).
        blur: largest share of a 3x3 box blur (applied twice) mixed into each image.
        blotches: largest amplitude of a smooth random colour field added to each image.
        blotch_cells: (fewest, most) cells per side of that field, drawn per batch.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    noise: float = 0.06
    brightness: float = 0.1
    rotation: float = 0.0
    perspective: float = 0.0
    blur: float = 0.0
    blotches: float = 0.0
    blotch_cells: tuple[int, int] = (2, 8)

    def _matrices(self, n: int, g: torch.Generator, keep: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, 3) maps output coordinates in [-1, 1]^2 to input coordinates."""
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
        m = torch.zeros(n, 3, 3)
        m[:, 0, 0], m[:, 0, 2] = w * flip, cx
        m[:, 1, 1], m[:, 1, 2] = h, cy
        m[:, 2, 2] = 1.0
        if self.rotation or self.perspective:  # drawn only when asked: old recipes replay
            rot = (torch.rand(n, generator=g) * 2 - 1) * self.rotation
            persp = (torch.rand(n, 2, generator=g) * 2 - 1) * self.perspective
            r = torch.eye(3).repeat(n, 1, 1)
            r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = rot.cos(), -rot.sin(), rot.sin(), \
                rot.cos()
            r[:, 2, :2] = persp
            m = m @ r
        return m

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
        n, _, hh, ww = x.shape
        m = self._matrices(n, g, keep).to(x)
        ys, xs = [(torch.arange(s, device=x.device, dtype=x.dtype) * 2 + 1) / s - 1
                  for s in (hh, ww)]
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)
        pts = base @ m.transpose(1, 2)                                      # (N, H*W, 3)
        grid = (pts[..., :2] / pts[..., 2:].clamp(min=1e-3)).view(n, hh, ww, 2)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = 1 + self.brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        sigma = self.noise * torch.rand(n, 1, 1, 1, generator=g)
        y = y * bright.to(y) + sigma.to(y) * torch.randn(y.shape, generator=g).to(y)
        if self.blur:
            soft = F.avg_pool2d(F.avg_pool2d(y, 3, 1, 1, count_include_pad=False), 3, 1, 1,
                                count_include_pad=False)
            y = torch.lerp(y, soft, (self.blur * torch.rand(n, 1, 1, 1, generator=g)).to(y))
        if self.blotches:
            lo, hi = self.blotch_cells
            cells = int(torch.randint(lo, hi + 1, (1,), generator=g))
            field = torch.randn(n, 3, cells, cells, generator=g).to(y)
            field = F.interpolate(field, size=(hh, ww), mode="bicubic", align_corners=False)
            amp = self.blotches * torch.rand(n, 1, 1, 1, generator=g)
            y = y + amp.to(y) * field
        return y.clamp(0, 1)


__all__ = ["Augment"]
