"""The contracts between the loop and what it drives, as runtime-checkable protocols.

A plain ``nn.Module`` with ``render()`` is a :class:`Generator`; optional abilities are small
separate protocols (:class:`InitFromImage`, :class:`Regularized`, :class:`Projected`,
:class:`TextConditioned`), never stub methods on a wide base class. A
diffusion model is a :class:`GuidedSampler`: it is sampled, not optimized, and yields one
:class:`Estimate` per step. Code asks ``isinstance(x, GuidedSampler)`` (or ``issubclass`` on a
registered class), never ``hasattr(x, "sample")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # torch is not imported at package import
    import torch
    from torch import Tensor


@runtime_checkable
class Generator(Protocol):
    """Anything whose ``render()`` is differentiable with respect to ``parameters()``.

    Shape:
        render() -> (B, 3, H, W) in [0, 1].
    """

    def parameters(self) -> Iterator["Tensor"]: ...

    def render(self) -> "Tensor": ...


@runtime_checkable
class InitFromImage(Protocol):
    """A generator that can start from an image.

    Shape:
        init_from(image (1 or B, 3, H, W) in [0, 1], any size).
    """

    def init_from(self, image: "Tensor") -> None: ...


@runtime_checkable
class Regularized(Protocol):
    """A generator with a loss of its own parameters (a prior), added to the guide's by the loop.

    Shape:
        regularizer() -> (total (), {name: ()}), differentiable w.r.t. ``parameters()``.
    """

    def regularizer(self) -> tuple["Tensor", dict[str, "Tensor"]]: ...


@runtime_checkable
class Projected(Protocol):
    """A generator whose parameters are put back on an allowed set after each optimizer step."""

    def project(self) -> None: ...


@runtime_checkable
class TextConditioned(Protocol):
    """A generator that conditions on the run's prompts (a text-to-image model's own text).

    The Run calls ``condition_on`` once, after building the generator and before the first step.
    """

    def condition_on(self, prompts: Sequence[Any]) -> None: ...


@dataclass(frozen=True)
class Estimate:
    """One step of a guided sampler.

    Attributes:
        index: 1-based step number (skipped steps of an init image included).
        image: the current estimate of the clean image, detached, (B, 3, H, W) in [0, 1].
        loss: the guide's total loss at this step, a detached 0-dim tensor.
        parts: the named parts of that loss, detached 0-dim tensors.
    """

    index: int
    image: "Tensor"
    loss: "Tensor"
    parts: dict[str, "Tensor"] = field(default_factory=dict)


@runtime_checkable
class GuidedSampler(Protocol):
    """A sampler steered by a guide at every step (diffusion); never mutates the guide.

    ``sample`` checks its arguments when called and returns an iterator of :class:`Estimate`;
    the last one holds the final sample. Closing the iterator frees the run's tensors.
    """

    def sample(self, guide: Any, steps: int,
               generator: "torch.Generator | None" = None) -> Iterator[Estimate]: ...


@runtime_checkable
class Embedder(Protocol):
    """A CLIP-like model: images in [0, 1] and texts to L2-normalized vectors.

    The embedder owns resizing to ``image_size`` and its model's mean/std.

    Shape:
        encode_image((N, 3, H, W) in [0, 1]) -> (N, D); encode_text(T strings) -> (T, D).
    """

    image_size: int

    def encode_image(self, x: "Tensor") -> "Tensor": ...

    def encode_text(self, texts: Sequence[str]) -> "Tensor": ...


__all__ = ["Generator", "InitFromImage", "Regularized", "Projected", "TextConditioned",
           "GuidedSampler", "Embedder", "Estimate"]
