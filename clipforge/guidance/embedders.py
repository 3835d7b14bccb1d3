"""CLIP embedders over open_clip: frozen models that map images and texts to unit vectors.

A model is named by a *spec* string:

- ``shapes`` / ``shapes-judge``: the small models bundled with clipforge (offline);
- ``ViT-B-32:laion2b_s34b_b79k``: an open_clip architecture and pretrained tag (downloaded
  and cached by open_clip through huggingface_hub);
- ``ViT-B-32:/path/to/weights.bin``: an open_clip architecture and a local weights file
  (safetensors or PyTorch; the format is read from the content);
- ``/path/to/folder`` or ``local-dir:/path``: a folder in open_clip's hub layout
  (``open_clip_config.json`` + weights), as written by open_clip's ``save_for_hf``;
- ``hf-hub:org/repo``: such a folder on the Hugging Face hub;
- ``ViT-B-32:random``: random initial weights (tests and benchmarks).

Any spec may end in ``@W`` to weight it inside an ensemble: ``shapes@1,shapes-judge@0.5``.
Origin: CLIP, Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; open_clip, Ilharco et al. 2021.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = ("shapes", "shapes-judge")


class ModelLoadError(ValueError):
    """A CLIP model cannot be loaded; the message lists what is available."""


class ClipEmbedder(nn.Module):
    """A frozen CLIP model that embeds images in [0, 1] and texts as L2-normalized vectors.

    The embedder owns resizing to the model's input size and CLIP's mean/std normalization.
    Weights are frozen and in eval mode, so a backward pass through ``encode_image`` costs one
    forward (no weight gradients are formed).

    Args:
        model: an open_clip ``CLIP`` (anything with ``encode_image`` and ``encode_text``).
        tokenizer: callable ``list[str] -> LongTensor (T, context)``.
        image_size: side of the square model input.
        mean: per-channel mean of the model's preprocessing.
        std: per-channel std of the model's preprocessing.
        name: the spec it was loaded from (for messages and metadata).
    """

    def __init__(self, model: nn.Module, tokenizer, image_size: int,
                 mean: Sequence[float], std: Sequence[float], name: str = "clip"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.name = name
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self._text_cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()
        self._lean_vit = _is_plain_vit(self.model)

    def train(self, mode: bool = True) -> "ClipEmbedder":
        """The wrapped CLIP always stays in eval mode."""
        super().train(False)
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
        if self._lean_vit:
            feats = _vit_features(self.model.visual, x)
        else:
            feats = self.model.encode_image(x)
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Embed texts; results are cached per text. Texts longer than the context warn.

        Shape:
            len(texts) -> (T, D), unit L2 norm.
        """
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


def _is_plain_vit(model: nn.Module) -> bool:
    """True when ``model.encode_image`` is open_clip's plain ViT, which :func:`_vit_features`
    computes the same way; anything else (ResNets, timm towers, CoCa, attentional pooling,
    cross-attention blocks) keeps open_clip's own forward."""
    if not type(model).__module__.startswith("open_clip"):
        return False
    try:
        import open_clip
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:
        return False
    encoders = {getattr(getattr(open_clip, n, None), "encode_image", None)
                for n in ("CLIP", "CustomTextCLIP")}
    v = getattr(model, "visual", None)
    if type(model).encode_image not in encoders or type(v) is not VisionTransformer:
        return False
    if getattr(v, "attn_pool", None) is not None or getattr(v, "output_tokens", False) \
            or not hasattr(v, "_pool"):
        return False
    c = v.conv1
    if not (isinstance(c, nn.Conv2d) and c.bias is None and c.kernel_size == c.stride
            and c.padding == (0, 0) and c.dilation == (1, 1) and c.groups == 1):
        return False
    for blk in v.transformer.resblocks:
        a = getattr(blk, "attn", None)
        if type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv") \
                or not isinstance(a, nn.MultiheadAttention) or not a._qkv_same_embed_dim \
                or a.bias_k is not None or a.add_zero_attn:
            return False
    return True


def _vit_features(visual: nn.Module, x: Tensor) -> Tensor:
    """open_clip's ``VisionTransformer.forward`` (eval mode), same weights and maths, less copying.

    On CPU this backpropagates about 20% faster than open_clip's forward: the patch
    convolution (kernel = stride) is a reshape and one matmul, and attention projects
    batch-first tokens with one contiguous matmul and ``scaled_dot_product_attention`` instead
    of ``nn.MultiheadAttention``'s sequence-first transposes and copies. Results agree with
    open_clip's to float rounding.

    Args:
        visual: an open_clip ``VisionTransformer`` accepted by :func:`_is_plain_vit`.
        x: normalized pixels.

    Shape:
        (N, 3, H, W) -> (N, D), not normalized.
    """
    w = visual.conv1.weight                                           # (E, 3, ph, pw)
    ph, pw = w.shape[-2:]
    n, c, h, wd = x.shape
    gh, gw = h // ph, wd // pw                                        # conv floors the same way
    x = x[..., :gh * ph, :gw * pw].reshape(n, c, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * ph * pw)
    x = F.linear(x, w.reshape(w.shape[0], -1))                        # (N, L, E)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(n, 1, -1), x], dim=1)
    x = visual.ln_pre(visual.patch_dropout(x + visual.positional_embedding.to(x.dtype)))
    for blk in visual.transformer.resblocks:
        a = blk.attn
        e, heads = x.shape[-1], a.num_heads
        qkv = F.linear(blk.ln_1(x), a.in_proj_weight, a.in_proj_bias)
        q, k, v = qkv.view(n, -1, 3, heads, e // heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)                  # (N, heads, L, e/heads)
        x = x + blk.ls_1(a.out_proj(o.transpose(1, 2).reshape(n, -1, e)))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


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


# ---------------------------------------------------------------------------------------------
# loading


def _split_weight(spec: str) -> tuple[str, float]:
    m = re.fullmatch(r"(.*)@([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)", spec.strip())
    return (m.group(1), float(m.group(2))) if m else (spec.strip(), 1.0)


def _open_clip():
    import open_clip

    return open_clip


def _image_size(model) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _wrap(model, tokenizer, name: str, device) -> ClipEmbedder:
    mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return ClipEmbedder(model, tokenizer, _image_size(model), mean, std, name).to(device)


def _quiet_create(oc, *args, **kwargs):
    """open_clip logs a warning whenever it builds an architecture without weights; we load
    the weights right after, so that warning would be false here."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return oc.create_model(*args, **kwargs)
    finally:
        logger.setLevel(level)


def _load_folder(folder: Path, name: str, device) -> ClipEmbedder:
    from clipforge.weights import WeightsError, load_state_dict

    oc = _open_clip()
    cfg = folder / "open_clip_config.json"
    if not cfg.is_file():
        raise ModelLoadError(f"clip {name!r}: folder {str(folder)!r} has no open_clip_config.json "
                             "(expected open_clip's hub layout: open_clip_config.json + weights)")
    weights = [folder / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                                    "model.safetensors", "pytorch_model.bin")
               if (folder / n).is_file()]
    if not weights:
        raise ModelLoadError(f"clip {name!r}: folder {str(folder)!r} has no weights file "
                             "(open_clip_model.safetensors or open_clip_pytorch_model.bin)")
    try:
        model = _quiet_create(oc, f"local-dir:{folder}", load_weights=False)
        tokenizer = oc.get_tokenizer(f"local-dir:{folder}")
        _load_into(model, load_state_dict(weights[0]), name, weights[0])
    except WeightsError as e:
        raise ModelLoadError(f"clip {name!r}: {e}") from None
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise ModelLoadError(f"clip {name!r}: cannot build the model in {str(folder)!r}: {e}") from None
    return _wrap(model, tokenizer, name, device)


def _load_into(model: nn.Module, sd: dict, name: str, path) -> None:
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"clip {name!r}: weights in {str(path)!r} do not match the architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")


def _available_message(oc) -> str:
    models = oc.list_models()
    return (f"bundled: {', '.join(BUNDLED)}; open_clip architectures ({len(models)}): "
            f"{', '.join(models[:12])}, ... (see `clipforge models`); or a folder / "
            "`NAME:/path/to/weights`")


def load_embedder(spec: str, device: str | torch.device = "cpu") -> ClipEmbedder:
    """Load one CLIP model by spec (see the module docstring) as a frozen ClipEmbedder.

    Raises:
        ModelLoadError: unknown name or tag (listing what exists), missing or corrupt weights,
            or a failed download (naming the file and how to use a local copy instead).
    """
    name, _ = _split_weight(spec)
    if name in BUNDLED:
        folder = ASSETS / name
        if not folder.is_dir():
            raise ModelLoadError(f"clip {name!r}: the bundled model is missing from {folder} "
                                 "(run scripts/make_bundled_models.py)")
        return _load_folder(folder, name, device)
    if name.startswith("local-dir:"):
        return _load_folder(Path(name[len("local-dir:"):]), name, device)
    if Path(name).is_dir():
        return _load_folder(Path(name), name, device)
    oc = _open_clip()
    if name.startswith("hf-hub:"):
        try:
            model = oc.create_model(name)
            return _wrap(model, oc.get_tokenizer(name), name, device)
        except Exception as e:
            raise ModelLoadError(_download_hint(name, e)) from None
    arch, sep, tag = name.partition(":")
    if arch not in oc.list_models():
        if Path(name).is_file():
            raise ModelLoadError(f"clip {name!r}: a weights file alone does not say its "
                                 "architecture; use ARCH:PATH, e.g. ViT-B-32:" + name)
        raise ModelLoadError(f"clip {name!r}: unknown model. Available: {_available_message(oc)}")
    tags = oc.list_pretrained_tags_by_model(arch)
    if not sep:
        raise ModelLoadError(f"clip {name!r}: name a pretrained tag, e.g. {arch}:{tags[0] if tags else 'TAG'}"
                             f" (tags: {', '.join(tags) or 'none'}; or {arch}:/path/to/weights, or "
                             f"{arch}:random)")
    if tag == "random":
        return _wrap(_quiet_create(oc, arch), oc.get_tokenizer(arch), name, device)
    if Path(tag).exists() or "/" in tag or "\\" in tag or tag.endswith((".bin", ".pt", ".pth", ".safetensors")):
        from clipforge.weights import WeightsError, load_state_dict

        try:
            sd = load_state_dict(tag)
        except WeightsError as e:
            raise ModelLoadError(f"clip {name!r}: {e}") from None
        model = _quiet_create(oc, arch)
        _load_into(model, sd, name, tag)
        return _wrap(model, oc.get_tokenizer(arch), name, device)
    if tag not in tags:
        raise ModelLoadError(f"clip {name!r}: unknown pretrained tag {tag!r} for {arch}; "
                             f"available tags: {', '.join(tags) or 'none'}")
    try:
        model = oc.create_model(arch, pretrained=tag)
    except Exception as e:
        raise ModelLoadError(_download_hint(name, e)) from None
    return _wrap(model, oc.get_tokenizer(arch), name, device)


def _download_hint(name: str, err: Exception) -> str:
    arch = name.partition(":")[0]
    return (f"clip {name!r}: could not fetch the weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}). If this machine is offline, "
            f"download open_clip_pytorch_model.bin (or open_clip_model.safetensors) on another "
            f"machine and pass `--clip {arch}:/path/to/that/file`, or a folder holding it with "
            "open_clip_config.json.")


class ModelCache:
    """Loaded embedders shared by every run in a process (the UI's sessions, a batch worker)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], ClipEmbedder] = {}
        self._lock = threading.Lock()

    def get(self, spec: str, device: str | torch.device = "cpu") -> ClipEmbedder:
        key = (_split_weight(spec)[0], str(torch.device(device)))
        with self._lock:
            if key not in self._models:
                self._models[key] = load_embedder(key[0], device)
            return self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def load_ensemble(specs: Sequence[str], device: str | torch.device = "cpu",
                  cache: ModelCache | None = None) -> Ensemble:
    """Load every spec (``name@weight``) into an Ensemble; every spec is checked first."""
    members = []
    for spec in specs:
        name, weight = _split_weight(spec)
        emb = cache.get(name, device) if cache is not None else load_embedder(name, device)
        members.append((emb, weight))
    return Ensemble(tuple(members))
