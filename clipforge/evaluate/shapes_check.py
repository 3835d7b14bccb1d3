"""A CLIP-free reading of a shapes image: the object's colour and shape and the background colour.

A second opinion beside the judge CLIP, which can be fooled the way the guide is (it is a
network trained on the same data). No learned part here:

1. background: the median colour of the image border, named by the nearest palette colour;
2. object: pixels far from the background colour, largest 4-connected component;
3. object colour: the component's median colour, nearest palette colour (the background's
   excluded);
4. shape from geometry: the radial profile r(theta) of the component's boundary around its
   centroid. Its Fourier spectrum peaks at the number of corners (3 triangle, 4 square,
   5 star); a profile with no clear peak is a circle. Circularity ``4 pi A / P**2`` settles a
   round blob with a small ripple.

Connected components are labelled by max-pooling label propagation in torch (a dozen lines)
rather than by adding scipy as a dependency for one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.training.shapes import COLOUR_NAMES, COLOURS

_PALETTE = torch.tensor([COLOURS[c] for c in COLOUR_NAMES])  # (8, 3)
OBJECT_DISTANCE = 0.25   # RGB distance from the background colour that counts as "object"
MIN_AREA = 0.01          # an object smaller than this share of the image is "no object"
ROUND_HARMONIC = 0.045   # harmonic amplitude / mean radius below which a blob is round
_CORNERS = ("triangle", "square", "star")  # what a dominant 3rd, 4th, 5th harmonic means


@dataclass(frozen=True)
class ShapeReading:
    """What :func:`read_shape` sees in one image.

    Attributes:
        colour: palette name of the object ("" when no object was found).
        shape: one of SHAPES ("" when no object was found).
        background: palette name of the background.
        area: the object's share of the image.
        harmonics: amplitude of the radial profile's 3rd, 4th and 5th harmonics / mean radius.
        circularity: ``4 pi A / P**2`` of the object (1 for a disc).
    """

    colour: str
    shape: str
    background: str
    area: float
    harmonics: tuple[float, float, float]
    circularity: float

    def matches(self, colour: str, shape: str, background: str | None = None) -> bool:
        """True when colour and shape (and the background, when given) are the ones read."""
        return self.colour == colour and self.shape == shape and \
            (background is None or self.background == background)


def _nearest(rgb: Tensor, exclude: int | None = None) -> int:
    d = (_PALETTE - rgb[None]).pow(2).sum(1)
    if exclude is not None:
        d[exclude] = float("inf")
    return int(d.argmin())


def largest_component(mask: Tensor) -> Tensor:
    """The largest 4-connected component of a boolean mask.

    Shape:
        (H, W) bool -> (H, W) bool.
    """
    h, w = mask.shape
    labels = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w),
                         torch.zeros(()))
    while True:  # every pixel takes the largest label among its 4 neighbours, until stable
        pad = F.pad(labels, (1, 1, 1, 1))
        near = torch.maximum(torch.maximum(pad[:-2, 1:-1], pad[2:, 1:-1]),
                             torch.maximum(pad[1:-1, :-2], pad[1:-1, 2:]))
        new = torch.where(mask, torch.maximum(labels, near), labels)
        if torch.equal(new, labels):
            break
        labels = new
    values, counts = labels[mask].unique(return_counts=True)
    if values.numel() == 0:
        return mask
    return labels == values[counts.argmax()]


def _radial_harmonics(comp: Tensor, bins: int = 90) -> tuple[float, float, float]:
    ys, xs = comp.nonzero(as_tuple=True)
    cy, cx = ys.float().mean(), xs.float().mean()
    inner = F.max_pool2d((~comp).float()[None, None], 3, 1, 1)[0, 0] > 0
    by, bx = (comp & inner).nonzero(as_tuple=True)  # boundary pixels
    dy, dx = by.float() - cy, bx.float() - cx
    theta = torch.atan2(-dy, dx)
    r = (dx * dx + dy * dy).sqrt()
    idx = ((theta + math.pi) / (2 * math.pi) * bins).long().clamp(0, bins - 1)
    prof = torch.zeros(bins).scatter_reduce(0, idx, r, "amax", include_self=True)
    filled = torch.zeros(bins).scatter_reduce(0, idx, torch.ones_like(r), "amax",
                                              include_self=True) > 0
    if filled.sum() < bins // 3:
        return 0.0, 0.0, 0.0
    k = torch.arange(bins, dtype=torch.float32)
    known = torch.cat([k[filled] - bins, k[filled], k[filled] + bins]).numpy()
    prof = torch.from_numpy(np.interp(k.numpy(), known,  # fill empty bins circularly
                                      prof[filled].repeat(3).numpy())).float()
    spec = torch.fft.rfft(prof).abs() / bins
    mean = float(prof.mean()) or 1.0
    return tuple(float(2 * spec[n] / mean) for n in (3, 4, 5))  # type: ignore[return-value]


def read_shape(image: Tensor) -> ShapeReading:
    """Read object colour, shape and background colour from one shapes image, without CLIP.

    Args:
        image: one image in [0, 1].

    Shape:
        (3, H, W) or (1, 3, H, W).
    """
    x = image.detach().float().cpu()
    x = x[0] if x.dim() == 4 else x
    _, h, w = x.shape
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)   # (3, 2H+2W)
    bg_rgb = border.median(dim=1).values
    bg = _nearest(bg_rgb)
    mask = (x - bg_rgb[:, None, None]).pow(2).sum(0).sqrt() > OBJECT_DISTANCE
    comp = largest_component(mask) if mask.any() else mask
    area = float(comp.float().mean())
    if area < MIN_AREA:
        return ShapeReading("", "", COLOUR_NAMES[bg], area, (0.0, 0.0, 0.0), 0.0)
    colour = _nearest(x[:, comp].median(dim=1).values, exclude=bg)
    harm = _radial_harmonics(comp)
    edges = (comp[1:] != comp[:-1]).sum() + (comp[:, 1:] != comp[:, :-1]).sum()
    perimeter = float(edges) * math.pi / 4  # a 4-connected edge count overestimates by 4/pi
    circ = 4 * math.pi * float(comp.sum()) / max(perimeter, 1.0) ** 2
    if max(harm) < ROUND_HARMONIC:
        shape = "circle"
    else:  # the dominant harmonic counts the corners
        shape = _CORNERS[max(range(3), key=lambda i: harm[i])]
    return ShapeReading(COLOUR_NAMES[colour], shape, COLOUR_NAMES[bg], area, harm, circ)


__all__ = ["ShapeReading", "read_shape", "largest_component"]
