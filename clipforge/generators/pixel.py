"""Pixel generator: the image itself is the parameter, optionally as a multi-scale pyramid.

A plain pixel grid optimized against CLIP collects high-frequency noise that fools the model
(an adversarial image). The pyramid (layers at 4, 8, 16, ... px, upsampled and summed, then a
sigmoid) lets coarse layers carry colour and layout, so results transfer to other models and to
the eye; see "Guidance that transfers" in DESIGN.md, where a pyramid with 32 cutouts and a TV
term agreed with a held-out judge on 4 of 4 prompts and raw pixels on 1 of 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.generators.draw import randn
from clipforge.images import fit_image


class PixelGenerator(nn.Module):
    """RGB image in [0, 1] as ``sigmoid(sum of upsampled layers)``.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        batch: images rendered at once.
        pyramid: use layers at ``min_size * 2**k`` px up to full size (False: one full layer).
        min_size: side of the coarsest layer, in pixels.
        level_decay: each layer's gain is ``(its side / min_size) ** -level_decay``, so finer
            layers move more slowly (0: every layer at gain 1, the classic pyramid). Adam
            steps every value by about the learning rate whatever its gradient, so without a
            gain the fine layers change as fast as the coarse ones and fill the image with
            texture; the gain is their per-level learning rate.
        init_std: standard deviation of the random initial layer values (logit units).
        generator: ``torch.Generator`` for the initial values.
        device: where the parameters live.

    Shape:
        render() -> (batch, 3, height, width) in [0, 1].
    """

    size_multiple = 1
    bytes_per_pixel = 375  # peak memory added per pixel (measured: see clipforge.memory)
    option_rules = {"min_size": {"min": 1, "max": 4096}, "level_decay": {"min": 0, "max": 4},
                    "init_std": {"min": 0, "max": 1e3}}

    def __init__(self, width: int, height: int, *, batch: int = 1, pyramid: bool = True,
                 min_size: int = 4, level_decay: float = 0.0, init_std: float = 0.1,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        if not min_size >= 1:  # the registry checks options; this guards a direct call
            raise ConfigError("min_size", f"{min_size!r} is out of range; allowed: >= 1")
        self.width, self.height = width, height
        sizes = []
        if pyramid:
            s = min_size
            while s < max(width, height):
                sizes.append((max(1, round(height * s / max(width, height))),
                              max(1, round(width * s / max(width, height)))))
                s *= 2
        sizes.append((height, width))
        coarsest = max(sizes[0])
        self.gains = [(max(h, w) / coarsest) ** -level_decay for h, w in sizes]
        self.layers = nn.ParameterList([
            nn.Parameter(randn((batch, 3, h, w), generator, device) * init_std) for h, w in sizes
        ])

    def render(self) -> Tensor:
        """Sum the upsampled layers and squash to [0, 1].

        Shape:
            () -> (batch, 3, height, width) in (0, 1).
        """
        acc = self.gains[-1] * self.layers[-1]  # x * 1.0 is exact: no gain, no change
        for layer, gain in zip(self.layers[:-1], self.gains[:-1]):
            acc = acc + gain * F.interpolate(layer, size=(self.height, self.width),
                                             mode="bilinear", align_corners=False)
        return torch.sigmoid(acc)

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Start from ``image``: the finest layer holds its logits, the coarser ones zero.

        Args:
            image: the picture to start from; resized to this generator's size.

        Shape:
            image: (1 or B, 3, H, W) in [0, 1].
        """
        target = fit_image(image, self.height, self.width, self.layers[-1])
        for layer in self.layers[:-1]:
            layer.zero_()
        logits = torch.logit(target.clamp(1e-3, 1 - 1e-3)) / self.gains[-1]
        self.layers[-1].copy_(logits.expand_as(self.layers[-1]))

