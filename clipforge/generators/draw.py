"""Random starting values drawn on the seed's own device, then moved to the generator's device.

Rule 3 of DESIGN.md: every random choice takes a ``torch.Generator``, and the same seed gives the
same image. A CPU generator draws the same numbers whatever device the run uses, so every
generator draws its initial latent, codes or noise here and moves the result; no generator
(None) means the global CPU stream.
"""

from __future__ import annotations

import torch
from torch import Tensor


def seed_device(generator: torch.Generator | None) -> torch.device:
    """The device a draw from ``generator`` happens on (CPU when there is none).

    Args:
        generator: the seed's stream, or None for the global CPU one.
    """
    return generator.device if generator is not None else torch.device("cpu")


def randn(shape, generator: torch.Generator | None, device) -> Tensor:
    """Standard normal values drawn from ``generator``, moved to ``device``.

    Args:
        shape: the tensor's shape.
        generator: the seed's stream, or None for the global one.
        device: where the result lives.

    Shape:
        ``shape``, float32, unbounded (mean 0, std 1).
    """
    return torch.randn(shape, generator=generator, device=seed_device(generator)).to(device)


def randint(high: int, shape, generator: torch.Generator | None, device) -> Tensor:
    """Whole numbers uniform in [0, high) drawn from ``generator``, moved to ``device``.

    Args:
        high: one past the largest value.
        shape: the tensor's shape.
        generator: the seed's stream, or None for the global one.
        device: where the result lives.

    Shape:
        ``shape``, int64, values in [0, high).
    """
    return torch.randint(high, shape, generator=generator,
                         device=seed_device(generator)).to(device)
