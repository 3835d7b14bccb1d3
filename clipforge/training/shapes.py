"""Procedural captioned-shapes data set: coloured shapes on plain backgrounds, with captions.

Each sample is one antialiased shape (circle, square, triangle, star) of one colour on a
background of another colour, at a random size, position and small rotation, captioned in
one of several phrasings ("a red circle on a blue background", "red circle", ...). Images are
rendered for a whole batch at once with signed distance functions in torch, so making data
costs far less than training on it. Everything is a pure function of an explicit
``torch.Generator``: the same seed gives the same pixels and captions.

The data set exists so that the project can train its own small CLIP models offline (the
contrastive recipe of Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision") and prove that guidance works without a model hub.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from clipforge.errors import UsageError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
"""Shape names, in label order."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.95, 0.95, 0.95),
    "black": (0.06, 0.06, 0.06),
}
"""Colour name -> nominal RGB in [0, 1]; samples jitter around it."""

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
"""Colour names, in label order (used for both shapes and backgrounds)."""

# Caption phrasings: with and without the background. {s}=shape, {c}=colour, {b}=background.
PHRASINGS_BG: tuple[str, ...] = (
    "a {c} {s} on a {b} background",
    "{c} {s} on {b}",
    "a {s} that is {c} on a {b} background",
    "a photo of a {c} {s} on a {b} background",
)
PHRASINGS: tuple[str, ...] = (
    "a {c} {s}",
    "{c} {s}",
    "a {s} that is {c}",
    "a photo of a {c} {s}",
)

SPLIT_SEEDS = {"train": 0, "val": 1_000_003}
"""Seed offsets of the fixed splits (a split is the stream of its seed, so they never mix)."""


def caption(shape: str, colour: str, background: str | None = None, phrasing: int = 0) -> str:
    """Build one caption, e.g. ``caption("circle", "red", "blue") -> "a red circle on a blue background"``.

    Args:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`COLOUR_NAMES`.
        background: a colour name, or None to leave the background out.
        phrasing: index into the phrasings (taken modulo their number).
    """
    if shape not in SHAPES:
        raise UsageError(f"shape: {shape!r} is not one of {', '.join(SHAPES)}")
    for name, value in (("colour", colour), ("background", background)):
        if value is not None and value not in COLOURS:
            raise UsageError(f"{name}: {value!r} is not one of {', '.join(COLOUR_NAMES)}")
    if background is None:
        return PHRASINGS[phrasing % len(PHRASINGS)].format(s=shape, c=colour)
    return PHRASINGS_BG[phrasing % len(PHRASINGS_BG)].format(s=shape, c=colour, b=background)


@dataclass(frozen=True)
class ShapesBatch:
    """A rendered batch: images, captions and the labels they were made from.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1].
        captions: N strings.
        shape: (N,) int64 index into SHAPES.
        colour: (N,) int64 index into COLOUR_NAMES.
        background: (N,) int64 index into COLOUR_NAMES.
        has_background: (N,) bool, whether the caption names the background.
        centre: (N, 2) float (x, y) of each shape's centre in [0, 1].
    """

    images: torch.Tensor
    captions: list[str]
    shape: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    has_background: torch.Tensor
    centre: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def match_matrix(self) -> torch.Tensor:
        """Which caption is true of which image: ``M[i, j]`` is True when caption j describes image i.

        A caption without a background is true of every image with its shape and colour; the
        contrastive loss uses this to avoid pushing apart images that share a caption.

        Shape:
            (N, N) bool; the diagonal is all True.
        """
        same = (self.shape[:, None] == self.shape[None, :]) & \
            (self.colour[:, None] == self.colour[None, :])
        bg_ok = (~self.has_background)[None, :] | \
            (self.background[:, None] == self.background[None, :])
        return same & bg_ok


def _rand(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _sd_circle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y) - 1.0


def _sd_square(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r = 0.85  # a square of half-side 0.85 has about the area of the unit circle's look
    qx, qy = x.abs() - r, y.abs() - r
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _sd_triangle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle pointing up (y up), circumradius ~1.15 (after Inigo Quilez)."""
    r = 1.0
    k = math.sqrt(3.0)
    y = y + 0.25  # centre the triangle's area, not its incircle
    px = x.abs() - r
    py = y + r / k
    flip = (px + k * py) > 0
    px, py = torch.where(flip, (px - k * py) / 2, px), torch.where(flip, (-k * px - py) / 2, py)
    px = px - px.clamp(-2 * r, 0)
    return -torch.sqrt(px * px + py * py) * torch.sign(py)


def _sd_star(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Five-pointed star pointing up (y up), outer radius 1.15 (sdStar5 after Inigo Quilez)."""
    r, rf = 1.15, 0.45
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = x.abs()
    py = y
    d = 2 * (k1x * px + k1y * py).clamp(min=0)
    px, py = px - d * k1x, py - d * k1y
    d = 2 * (k2x * px + k2y * py).clamp(min=0)
    px, py = px - d * k2x, py - d * k2y
    px = px.abs()
    py = py - r
    bax, bay = rf * -k1y, rf * k1x - 1.0
    h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0, r)
    dist = torch.sqrt((px - bax * h) ** 2 + (py - bay * h) ** 2)
    return dist * torch.sign(py * bax - px * bay)


_SDF = (_sd_circle, _sd_square, _sd_triangle, _sd_star)


def render(shape: torch.Tensor, colour: torch.Tensor, background: torch.Tensor,
           centre: torch.Tensor, radius: torch.Tensor, angle: torch.Tensor,
           size: int = 64) -> torch.Tensor:
    """Render antialiased shapes, one per row of the parameters.

    Args:
        shape: (N,) int64 index into SHAPES.
        colour: (N, 3) float RGB of the shape in [0, 1].
        background: (N, 3) float RGB of the background in [0, 1].
        centre: (N, 2) float (x, y) in [0, 1] image coordinates.
        radius: (N,) float radius as a fraction of the image side.
        angle: (N,) float rotation in radians.
        size: image side in pixels.

    Shape:
        returns (N, 3, size, size) float32 in [0, 1].
    """
    n = shape.shape[0]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    scale = radius.view(n, 1, 1)
    dx = (xx[None] - centre[:, 0].view(n, 1, 1)) / scale
    dy = -(yy[None] - centre[:, 1].view(n, 1, 1)) / scale  # y up
    c, s = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    x, y = c * dx + s * dy, -s * dx + c * dy
    sdf = torch.empty(n, size, size)
    for i, fn in enumerate(_SDF):
        idx = (shape == i).nonzero().flatten()
        if idx.numel():
            sdf[idx] = fn(x[idx], y[idx])
    pixel = 1.0 / (size * radius.view(n, 1, 1))  # one pixel in shape units
    cover = (0.5 - sdf / pixel).clamp(0, 1)[:, None]  # (N,1,H,W) antialiased coverage
    img = background[:, :, None, None] * (1 - cover) + colour[:, :, None, None] * cover
    return img.clamp(0, 1)


class ShapesDataset:
    """Captioned shapes, drawn from an explicit generator.

    Args:
        image_size: side in pixels (32 to 256; 64 by default).
        shapes: shape names to use (a subset of SHAPES).
        colours: colour names to use (a subset of COLOUR_NAMES); backgrounds use the same list.
        background_prob: chance that a caption names the background.
        jitter: colour jitter (std of an RGB offset) around each nominal colour.
    """

    def __init__(self, image_size: int = 64, shapes: Sequence[str] = SHAPES,
                 colours: Sequence[str] = COLOUR_NAMES, background_prob: float = 0.5,
                 jitter: float = 0.04):
        if not isinstance(image_size, int) or not 32 <= image_size <= 256:
            raise UsageError(f"image_size: {image_size!r} is out of range; allowed: 32 to 256")
        bad = [s for s in shapes if s not in SHAPES] + [c for c in colours if c not in COLOURS]
        if bad:
            raise UsageError(f"unknown shape or colour {bad[0]!r}; shapes: {', '.join(SHAPES)}; "
                             f"colours: {', '.join(COLOUR_NAMES)}")
        if len(colours) < 2:
            raise UsageError("colours: need at least 2 (the background differs from the shape)")
        self.image_size = image_size
        self.shapes = tuple(shapes)
        self.colours = tuple(colours)
        self.background_prob = float(background_prob)
        self.jitter = float(jitter)
        self._shape_ids = torch.tensor([SHAPES.index(s) for s in self.shapes])
        self._colour_ids = torch.tensor([COLOUR_NAMES.index(c) for c in self.colours])
        self._rgb = torch.tensor([COLOURS[c] for c in COLOUR_NAMES])

    def sample(self, n: int, generator: torch.Generator) -> ShapesBatch:
        """Draw and render ``n`` captioned shapes.

        Args:
            n: batch size.
            generator: the only source of randomness.
        """
        g = generator
        shape = self._shape_ids[torch.randint(len(self.shapes), (n,), generator=g)]
        ci = torch.randint(len(self.colours), (n,), generator=g)
        # background: any other colour of the list
        bi = (ci + 1 + torch.randint(len(self.colours) - 1, (n,), generator=g)) % len(self.colours)
        colour, background = self._colour_ids[ci], self._colour_ids[bi]
        radius = _rand(n, 0.16, 0.36, g)
        margin = radius * 1.0
        cx = margin + (1 - 2 * margin) * torch.rand(n, generator=g)
        cy = margin + (1 - 2 * margin) * torch.rand(n, generator=g)
        angle = _rand(n, -0.25, 0.25, g)
        fg = (self._rgb[colour] + self.jitter * torch.randn(n, 3, generator=g)).clamp(0, 1)
        bg = (self._rgb[background] + self.jitter * torch.randn(n, 3, generator=g)).clamp(0, 1)
        has_bg = torch.rand(n, generator=g) < self.background_prob
        phr = torch.randint(len(PHRASINGS), (n,), generator=g)
        centre = torch.stack([cx, cy], 1)
        images = render(shape, fg, bg, centre, radius, angle, self.image_size)
        caps = [caption(SHAPES[s], COLOUR_NAMES[c], COLOUR_NAMES[b] if h else None, p)
                for s, c, b, h, p in zip(shape.tolist(), colour.tolist(), background.tolist(),
                                         has_bg.tolist(), phr.tolist())]
        return ShapesBatch(images, caps, shape, colour, background, has_bg, centre)

    def stream(self, batch_size: int, seed: int = 0, split: str = "train") -> Iterator[ShapesBatch]:
        """Infinite stream of batches; the same (seed, split) gives the same batches.

        Args:
            batch_size: samples per batch.
            seed: base seed.
            split: "train" or "val" (different seed streams).
        """
        g = torch.Generator().manual_seed(self._split_seed(seed, split))
        while True:
            yield self.sample(batch_size, g)

    def split(self, name: str = "val", n: int = 512, seed: int = 0) -> ShapesBatch:
        """A fixed split: the first ``n`` samples of the split's seed stream.

        Args:
            name: "train" or "val".
            n: number of samples.
            seed: base seed.
        """
        g = torch.Generator().manual_seed(self._split_seed(seed, name))
        return self.sample(n, g)

    @staticmethod
    def _split_seed(seed: int, split: str) -> int:
        if split not in SPLIT_SEEDS:
            raise UsageError(f"split: {split!r} is not one of {', '.join(SPLIT_SEEDS)}")
        return (int(seed) * 7919 + SPLIT_SEEDS[split]) % (2**63 - 1)
