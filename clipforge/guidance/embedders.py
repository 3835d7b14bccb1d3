"""CLIP embedders: frozen models that map images in [0, 1] and texts to unit vectors.

:class:`ClipEmbedder` wraps any open_clip ``CLIP`` (it owns resizing and the model's mean/std)
and is the project's one embedder: the guide, the judge, zero-shot evaluation and training's
own evaluation of a model being trained all use it. :class:`Ensemble` weights several.
Loading a model by name is :mod:`clipforge.guidance.clip_models`.
Origin: CLIP, Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; open_clip, Ilharco et al. 2021.
"""

from __future__ import annotations

import copy
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.guidance.lean_resnet import is_open_clip_resnet, make_lean
from clipforge.guidance.lean_vit import is_plain_vit, vit_features

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEmbedder(nn.Module):
    """A frozen CLIP model that embeds images in [0, 1] and texts as L2-normalized vectors.

    The embedder owns resizing to the model's input size and CLIP's mean/std normalization.
    Weights are frozen and in eval mode, so a backward pass through ``encode_image`` costs one
    forward (no weight gradients are formed). ``frozen=False`` wraps a model that is being
    trained: its mode and gradients are left alone and text embeddings are not cached.

    Args:
        model: an open_clip ``CLIP`` (anything with ``encode_image`` and ``encode_text``).
        tokenizer: callable ``list[str] -> LongTensor (T, context)``.
        image_size: side of the square model input.
        mean: per-channel mean of the model's preprocessing.
        std: per-channel std of the model's preprocessing.
        name: the spec it was loaded from (for messages and metadata).
        frozen: freeze the model (eval mode, no weight gradients) and cache text embeddings.
    """

    def __init__(self, model: nn.Module, tokenizer, image_size: int,
                 mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
                 name: str = "clip", *, frozen: bool = True):
        super().__init__()
        self.frozen = frozen
        self.model = model.eval().requires_grad_(False) if frozen else model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.name = name
        first = next(model.parameters(), None)
        dev = first.device if first is not None else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=dev)
                             .view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=dev)
                             .view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()
        self._lean_vit = frozen and is_plain_vit(self.model)  # its maths is eval mode's
        # a frozen convolutional tower runs channels-last, oneDNN's native layout (forward and
        # backward about 1.3x faster here); open_clip's ResNet also gets its batch norms folded
        # into its convolutions (lean_resnet), in a copy: the model itself stays loadable/savable
        visual = getattr(self.model, "visual", None)
        self._channels_last = frozen and not self._lean_vit and visual is not None and sum(
            isinstance(m, nn.Conv2d) for m in visual.modules()) > 1
        self.lean_tower = None
        if self._channels_last and is_open_clip_resnet(visual):
            self.lean_tower = make_lean(copy.deepcopy(visual))
        elif self._channels_last:
            visual.to(memory_format=torch.channels_last)
        self._features = self._image_features
        self._compiled = None  # the torch.compile'd tower, made on first request

    def compile_tower(self, enabled: bool = True) -> "ClipEmbedder":
        """Run the image tower through ``torch.compile`` (compiled once, on the first call
        of each input shape, and kept while this embedder is cached), or not."""
        if enabled and self._compiled is None:
            self._compiled = torch.compile(self._image_features, dynamic=False)
        self._features = self._compiled if enabled else self._image_features
        return self

    def train(self, mode: bool = True) -> "ClipEmbedder":
        """A frozen CLIP always stays in eval mode; a training one follows ``mode``."""
        super().train(False if self.frozen else mode)
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_image(self, x: Tensor) -> Tensor:
        """Embed images (differentiable with respect to ``x``).

        Args:
            x: images in [0, 1], any size; resized (antialiased) to the model's input.

        Shape:
            (N, 3, H, W) -> (N, D), unit L2 norm.
        """
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return F.normalize(self._features(x).float(), dim=-1)

    def _image_features(self, x: Tensor) -> Tensor:
        if self._lean_vit:
            return vit_features(self.model.visual, x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.lean_tower is not None:   # what encode_image computes (its visual tower)
            return self.lean_tower(x)
        return self.model.encode_image(x)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Embed texts; results are cached per text. Texts longer than the context warn.

        Shape:
            len(texts) -> (T, D), unit L2 norm.
        """
        if not self.frozen:  # the model changes between calls: nothing to cache
            tokens = self.tokenizer(list(texts)).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
            if missing:
                self._warn_truncation(missing)
                tokens = self.tokenizer(list(missing)).to(self.device)
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
                self._text_cache.update(zip(missing, emb))
            return torch.stack([self._text_cache[t] for t in texts])

    def _warn_truncation(self, texts: Sequence[str]) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        context = getattr(self.tokenizer, "context_length", None)
        if encode is None or context is None:
            return
        for t in texts:
            # cheap bound first: a text of few characters cannot exceed the context
            if len(t) > context and len(encode(t[: 8 * context])) > context - 2:
                warnings.warn(f"{self.name}: prompt truncated to the model's {context}-token "
                              f"context ({len(t):,} characters given: {t[:40]!r}...)",
                              stacklevel=3)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, image_size={self.image_size}"


@dataclass(frozen=True)
class Ensemble:
    """Several embedders with per-model weights; the Guide sums their weighted losses."""

    members: tuple[tuple[ClipEmbedder, float], ...]

    @property
    def image_size(self) -> int:
        return max(e.image_size for e, _ in self.members)

    @property
    def names(self) -> list[str]:
        return [e.name for e, _ in self.members]


@torch.no_grad()
def encode_images(embedder, images: Tensor, batch: int = 256) -> Tensor:
    """Embed many images in chunks of ``batch`` (no gradients).

    Shape:
        images: (N, 3, H, W) in [0, 1] -> (N, D).
    """
    return torch.cat([embedder.encode_image(images[i:i + batch])
                      for i in range(0, images.shape[0], batch)])


def split_weight(spec: str) -> tuple[str, float]:
    """``"shapes@0.5"`` -> ``("shapes", 0.5)``; no ``@W`` -> weight 1."""
    m = re.fullmatch(r"(.*)@([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)", spec.strip())
    return (m.group(1), float(m.group(2))) if m else (spec.strip(), 1.0)


__all__ = ["ClipEmbedder", "Ensemble", "encode_images", "split_weight", "OPENAI_MEAN", "OPENAI_STD"]
