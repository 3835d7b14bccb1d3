"""CLIP models in the transformers format (``CLIPModel``, ``SiglipModel``) as clipforge embedders.

The most common CLIP checkpoints (``openai/clip-vit-base-patch32`` and its kin, SigLIP) are
distributed as transformers folders: ``config.json`` + weights, ``preprocessor_config.json``
and the tokenizer files, loaded with ``AutoModel.from_pretrained`` and the model's processor.
open_clip cannot read them. :func:`load_hf_embedder` loads one (a hub id through
``from_pretrained``, or a local folder written by ``save_pretrained``) into the same
:class:`~clipforge.guidance.embedders.ClipEmbedder` the open_clip models use, so it guides,
joins ensembles and serves ``classify`` and ``score`` alike.

Preprocessing is the model's own and part of the contract: the image side, mean and std come
from its image processor (CLIP: OpenAI's mean/std at 224 px; SigLIP: mean = std = 0.5), the
text side pads to the tokenizer's own length (CLIP 77 tokens, SigLIP 64, padded to full
length as SigLIP was trained). Needs ``pip install 'clipforge[diffusion]'`` (transformers).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from clipforge.errors import ModelLoadError, first_line

KINDS = ("clip", "siglip")


def _features(out) -> Tensor:
    """transformers 4 returns the projected features; 5 a model output holding them."""
    return out if isinstance(out, Tensor) else out.pooler_output


class HFClip(nn.Module):
    """``encode_image`` / ``encode_text`` over a transformers ``CLIPModel`` or ``SiglipModel``.

    Args:
        model: the transformers model (its projections give the joint embedding space).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.hf = model

    def encode_image(self, x: Tensor) -> Tensor:
        """Shape: (N, 3, S, S) normalized pixels -> (N, D), not yet unit norm."""
        dtype = next(self.hf.parameters()).dtype
        return _features(self.hf.get_image_features(pixel_values=x.to(dtype)))

    def encode_text(self, tokens) -> Tensor:
        """Shape: the tokenizer's batch (T sequences) -> (T, D), not yet unit norm."""
        return _features(self.hf.get_text_features(**dict(tokens)))


class HFTokenizer:
    """A transformers tokenizer called as open_clip's are: ``list[str] -> batch`` (``.to``).

    Args:
        tokenizer: the model's tokenizer.
        context_length: tokens per text (padded to it, longer texts truncated).
        pad_to_max: pad every text to ``context_length`` (SigLIP) rather than the longest.
        attention_mask: pass the mask on (CLIP uses it; SigLIP's text tower takes none).
    """

    def __init__(self, tokenizer, context_length: int, pad_to_max: bool, attention_mask: bool):
        self.tokenizer, self.context_length = tokenizer, int(context_length)
        self.pad_to_max, self.attention_mask = pad_to_max, attention_mask

    def __call__(self, texts: list[str]):
        batch = self.tokenizer(list(texts), padding="max_length" if self.pad_to_max else True,
                               truncation=True, max_length=self.context_length,
                               return_tensors="pt")
        if not self.attention_mask:
            batch.pop("attention_mask", None)
        return batch

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, untruncated (for the truncation warning)."""
        return self.tokenizer(text, truncation=False)["input_ids"]


def is_hf_folder(folder: Path) -> bool:
    """True for a transformers CLIP/SigLIP folder (``config.json`` naming such a model)."""
    import json

    cfg = folder / "config.json"
    if not cfg.is_file() or (folder / "open_clip_config.json").is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") in KINDS
    except (OSError, ValueError, AttributeError):
        return False


def _image_side(processor) -> int:
    for d in (getattr(processor, "crop_size", None), getattr(processor, "size", None)):
        for key in ("height", "shortest_edge"):  # a dict, or transformers 5's SizeDict
            value = d.get(key) if isinstance(d, dict) else getattr(d, key, None)
            if value:
                return int(value)
    raise ModelLoadError("the image processor names no input size")


def load_hf_embedder(source: str, name: str, device="cpu"):
    """Load a transformers CLIP/SigLIP model (hub id or folder) as a frozen ClipEmbedder.

    Args:
        source: a hub id (``openai/clip-vit-base-patch32``) or a ``save_pretrained`` folder.
        name: the spec it came from (``hf:...``), for messages.
        device: where the model goes.

    Raises:
        ModelLoadError: transformers missing, not a CLIP/SigLIP model, or a failed download
            (naming how to use a local folder instead).
    """
    from clipforge.guidance.embedders import ClipEmbedder
    from clipforge.offline import before_hub_access, offline_reason

    try:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError:
        raise ModelLoadError(f"clip {name!r}: transformers models need transformers; run: "
                             "pip install 'clipforge[diffusion]'") from None
    local = Path(source).is_dir()
    if not local:
        before_hub_access()
    try:
        model = AutoModel.from_pretrained(source)
        processor = AutoImageProcessor.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        reason = offline_reason() if not local else None
        hint = "" if local else (
            f" If this machine is offline, save the model on another one with "
            f"save_pretrained (model, processor) and pass `--clip hf:/path/to/folder`"
            + (f" (offline: {reason})" if reason else ""))
        raise ModelLoadError(f"clip {name!r}: cannot load a transformers model from "
                             f"{source!r}: {first_line(e)}.{hint}") from None
    kind = model.config.model_type
    if kind not in KINDS:
        raise ModelLoadError(f"clip {name!r}: {source!r} is a {kind!r} model; expected one of "
                             f"{', '.join(KINDS)} (CLIPModel, SiglipModel)")
    siglip = kind == "siglip"
    context = getattr(model.config.text_config, "max_position_embeddings", 77)
    if 0 < getattr(tokenizer, "model_max_length", 0) < context:
        context = tokenizer.model_max_length
    tok = HFTokenizer(tokenizer, context, pad_to_max=siglip, attention_mask=not siglip)
    emb = ClipEmbedder(HFClip(model), tok, _image_side(processor), processor.image_mean,
                       processor.image_std, name)
    return emb.to(device)


__all__ = ["HFClip", "HFTokenizer", "is_hf_folder", "load_hf_embedder"]
