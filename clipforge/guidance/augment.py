"""Cutouts: N random square crops of an image, resampled to CLIP's input size in ONE batched op.

Each crop is a 3x3 projective matrix (scale and offset from the classic VQGAN+CLIP
``MakeCutouts`` size law, plus optional flip, small rotation and perspective jitter); all N
matrices drive a single ``grid_sample``. Random parameters are sampled apart from applying
them (as in kornia and torchvision v2), from an explicit ``torch.Generator``, so a set of
cutouts can be replayed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CutoutParams:
    """Everything random about one call, so it can be replayed.

    Shape:
        matrices: (N, 3, 3) maps output coords in [-1, 1]^2 to input coords in [-1, 1]^2.
        noise_std: (N,) standard deviation of the additive pixel noise per cutout.
    """

    matrices: Tensor
    noise_std: Tensor
    noise_seed: int
    size: int
    supersample: int


class Cutouts:
    """Makes ``cutn`` augmented square crops of side ``cut_size`` from each image.

    Args:
        cut_size: output side in pixels (the CLIP model's input size).
        cutn: crops per image per call.
        cut_pow: crop size law ``size = u ** cut_pow * (max - min) + min``, ``u ~ U(0, 1)``;
            above 1 favours small crops (origin: the VQGAN+CLIP notebooks).
        min_frac: smallest crop as a fraction of the image's short side (default: the
            classic ``cut_size / short side``, at most 1).
        augment: enable flips, rotation/perspective jitter and pixel noise.
        flip_p: probability of a horizontal flip.
        max_rotation: largest rotation, radians.
        max_perspective: largest perspective coefficient (0 = affine only).
        noise: largest standard deviation of the additive Gaussian pixel noise.

    Shape:
        input (B, 3, H, W) in [0, 1] -> (B * cutn, 3, cut_size, cut_size), image-major.
    """

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, *,
                 min_frac: float | None = None, augment: bool = True, flip_p: float = 0.5,
                 max_rotation: float = math.radians(8), max_perspective: float = 0.15,
                 noise: float = 0.1):
        if cut_size < 1 or cutn < 1 or cut_pow <= 0:
            raise ValueError(f"Cutouts: need cut_size >= 1, cutn >= 1, cut_pow > 0; got "
                             f"{cut_size}, {cutn}, {cut_pow}")
        self.cut_size, self.cutn, self.cut_pow = cut_size, cutn, cut_pow
        self.min_frac, self.augment, self.flip_p = min_frac, augment, flip_p
        self.max_rotation, self.max_perspective, self.noise = max_rotation, max_perspective, noise

    def sample(self, height: int, width: int, generator: torch.Generator | None = None,
               n: int | None = None) -> CutoutParams:
        """Draw the random parameters for ``n`` (default ``cutn``) crops of an HxW image.

        Parameters are drawn on the generator's device (CPU by default); they are small.
        """
        n = self.cutn if n is None else n
        g = generator
        dev = g.device if g is not None else torch.device("cpu")
        short = min(height, width)
        min_frac = self.min_frac if self.min_frac is not None else min(1.0, self.cut_size / short)
        u = torch.rand(n, generator=g, device=dev)
        frac = u.pow(self.cut_pow) * (1.0 - min_frac) + min_frac          # of the short side
        side_px = frac * short
        sx, sy = side_px / width, side_px / height                       # half extents in [-1,1]
        cx = (torch.rand(n, generator=g, device=dev) * 2 - 1) * (1 - sx)
        cy = (torch.rand(n, generator=g, device=dev) * 2 - 1) * (1 - sy)
        flip = torch.ones(n, device=dev)
        rot = torch.zeros(n, device=dev)
        persp = torch.zeros(n, 2, device=dev)
        noise_std = torch.zeros(n, device=dev)
        if self.augment:
            flip = torch.where(torch.rand(n, generator=g, device=dev) < self.flip_p, -1.0, 1.0)
            rot = (torch.rand(n, generator=g, device=dev) * 2 - 1) * self.max_rotation
            persp = (torch.rand(n, 2, generator=g, device=dev) * 2 - 1) * self.max_perspective
            noise_std = torch.rand(n, generator=g, device=dev) * self.noise
        # M = T(c) @ S(s) @ R(rot) @ Flip @ P(persp): output square -> input region
        cos, sin = rot.cos(), rot.sin()
        m = torch.zeros(n, 3, 3, device=dev)
        m[:, 0, 0], m[:, 0, 1] = sx * cos * flip, -sx * sin
        m[:, 1, 0], m[:, 1, 1] = sy * sin * flip, sy * cos
        m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = cx, cy, 1.0
        p = torch.eye(3, device=dev).repeat(n, 1, 1)
        p[:, 2, :2] = persp
        matrices = m @ p
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=dev).item())
        supersample = 2 if short >= 2 * self.cut_size else 1
        return CutoutParams(matrices, noise_std, seed, self.cut_size, supersample)

    def apply(self, image: Tensor, params: CutoutParams) -> Tensor:
        """Resample the crops described by ``params`` from ``image`` in one ``grid_sample``.

        Shape:
            image (B, 3, H, W) -> (B * N, 3, size, size)
        """
        b = image.shape[0]
        n = params.matrices.shape[0]
        s = params.size * params.supersample
        dev, dt = image.device, image.dtype
        lin = (torch.arange(s, device=dev, dtype=dt) * 2 + 1) / s - 1     # pixel centres
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        base = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(-1, 3)   # (s*s, 3)
        h = params.matrices.to(device=dev, dtype=dt)
        pts = base @ h.transpose(1, 2)                                      # (N, s*s, 3)
        grid = pts[..., :2] / pts[..., 2:].clamp(min=1e-3)                # (N, s*s, 2)
        if b == 1:
            # the image expanded (no copy) to one sample per crop: the CPU kernels parallelize
            # over the batch, so the backward runs on every core instead of one, and the
            # crops come out in their final layout (no transpose copy)
            out = F.grid_sample(image.expand(n, -1, -1, -1), grid.reshape(n, s, s, 2),
                                mode="bilinear", padding_mode="reflection", align_corners=False)
        else:
            # all N crops stacked in one grid over each image: no per-crop copy of the images,
            # and the backward accumulates into one (B, 3, H, W) gradient
            out = F.grid_sample(image, grid.reshape(1, n * s, s, 2).expand(b, -1, -1, -1),
                                mode="bilinear", padding_mode="reflection",
                                align_corners=False)                           # (B, 3, N*s, s)
            out = out.view(b, -1, n, s, s).transpose(1, 2).reshape(b * n, -1, s, s)
        if params.supersample > 1:
            out = F.avg_pool2d(out, params.supersample)
        if bool(self.augment) and self.noise > 0:
            g = torch.Generator(device=dev).manual_seed(params.noise_seed)
            eps = torch.randn(out.shape, generator=g, device=dev, dtype=dt)
            std = params.noise_std.to(device=dev, dtype=dt).repeat(b)
            out = out + eps * std[:, None, None, None]
        return out

    def __call__(self, image: Tensor, generator: torch.Generator | None = None,
                 n: int | None = None) -> Tensor:
        """Sample parameters for ``n`` (default ``cutn``) crops and apply them; see
        :meth:`sample` and :meth:`apply`."""
        params = self.sample(image.shape[-2], image.shape[-1], generator, n)
        return self.apply(image, params)
