"""Train a CLIP from captioned images with the contrastive objective; zero-shot and linear probe.

The objective is the one of Radford et al. 2021 ("Learning Transferable Visual Models From
Natural Language Supervision", CLIP): a symmetric cross-entropy over the N x N image-text
similarity matrix of a batch, scaled by a learned temperature (``logit_scale``, clamped to
ln(100)). When several captions in a batch are true of one image (the shapes set repeats
captions), the targets are spread over all of them instead of the diagonal only, so true pairs
are not pushed apart; with distinct captions this is exactly CLIP's loss.

The model is any open_clip ``CLIP``: a built-in config by name (``ViT-B-32``), a JSON file, a
dict, or one of the small configs in :data:`CONFIGS`. Training images are augmented (random
resized crops at several scales, flips, brightness and noise) because robust models give
perceptually aligned gradients, which CLIP guidance needs.

Data: ``"shapes"`` (the procedural set of :mod:`clipforge.training.shapes`), a folder of
images with same-name ``.txt`` captions, or a ``.csv`` / ``.jsonl`` of (path, caption).
Bad data raises :class:`DataError` (a ``ValueError``) naming the file and line.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
"""Upper clamp of the learned log-temperature, as in the CLIP paper."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Small CLIPs for 64 px images (the open_clip default BPE tokenizer; a short context).
CONFIGS: dict[str, dict[str, Any]] = {
    # a small ModifiedResNet (CLIP's RN50 design: 4 stages of one bottleneck, attention
    # pooling); ~0.2 s per step of 128 on 2 CPU cores, and its loss falls faster than the ViTs'
    "shapes-rn-s": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 3},
    },
    # a narrower, deeper ModifiedResNet
    "shapes-rn-xs": {
        "embed_dim": 48,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 12, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 48, "heads": 2,
                     "layers": 2},
    },
    # the guide bundled as `shapes`: a tiny ViT on 64 px, patch 8
    "shapes-vit-s": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 3},
    },
    # the judge bundled as `shapes-judge`: other width, depth and embedding size
    "shapes-vit-xs": {
        "embed_dim": 48,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 96, "layers": 3,
                       "head_width": 32, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 48, "heads": 2,
                     "layers": 2},
    },
    # for tests: trains in a fraction of a second per step
    "tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1,
                       "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 1,
                     "layers": 1},
    },
}


class DataError(ValueError):
    """Training data cannot be used; ``path`` (and ``line`` when known) say where."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None):
        where = "" if path is None else f"{path}" + ("" if line is None else f", line {line}")
        super().__init__(f"{where}: {message}" if where else message)
        self.path = None if path is None else str(path)
        self.line = line


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------

def resolve_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Turn a config name, JSON file or dict into open_clip ``CLIP`` keyword arguments.

    Args:
        config: a name from :data:`CONFIGS`, an open_clip built-in name (``ViT-B-32``), a JSON
            file (plain kwargs or ``{"model_cfg": ...}`` as in open_clip_config.json), or a dict.
    """
    if isinstance(config, Mapping):
        cfg = dict(config.get("model_cfg", config))
    elif str(config) in CONFIGS:
        cfg = copy.deepcopy(CONFIGS[str(config)])
    elif str(config).endswith(".json") or Path(config).is_file():
        p = Path(config)
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"config: cannot read model config {str(p)!r}: {e}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"config: {str(p)!r} must hold a JSON object")
        cfg = dict(cfg.get("model_cfg", cfg))
    else:
        import open_clip

        cfg = open_clip.get_model_config(str(config))
        if cfg is None:
            raise ValueError(f"config: unknown model config {str(config)!r}; small configs: "
                             f"{', '.join(CONFIGS)}; open_clip configs: "
                             f"{', '.join(open_clip.list_models()[:12])}, ...")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ValueError(f"config: model config lacks {', '.join(missing)}")
    return copy.deepcopy(cfg)


def build_model(model_cfg: Mapping[str, Any]) -> torch.nn.Module:
    """Build a randomly initialised open_clip model from its keyword arguments.

    Args:
        model_cfg: open_clip CLIP kwargs (see :func:`resolve_config`).
    """
    import open_clip

    cfg = copy.deepcopy(dict(model_cfg))
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    return cls(**cfg)


def build_tokenizer(model_cfg: Mapping[str, Any]):
    """The tokenizer open_clip would pick for this config (offline for the default BPE)."""
    import open_clip

    text_cfg = model_cfg.get("text_cfg", {})
    ctx = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx)
    return open_clip.SimpleTokenizer(context_length=ctx)


def image_size_of(model_cfg: Mapping[str, Any]) -> int:
    """The square input side of the config's vision tower."""
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class ModelEmbedder:
    """A minimal embedder over an open_clip model: resizes, normalises, L2-normalises.

    It follows the project's Embedder contract (``encode_image(x in [0,1]) -> (N,D)``,
    ``encode_text(list[str]) -> (T,D)``, both unit length) so that zero-shot and scoring code
    work on a model being trained; the model is used as is (not frozen, not moved).

    Args:
        model: an open_clip CLIP.
        tokenizer: callable list[str] -> (T, context) int64.
        image_size: side the model expects.
        mean, std: per-channel normalisation.
    """

    def __init__(self, model, tokenizer, image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                 std: Sequence[float] = OPENAI_STD):
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Shape:
            x: (N, 3, H, W) in [0, 1] -> (N, D), unit length.
        """
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        x = (x - self.mean.to(x)) / self.std.to(x)
        return F.normalize(self.model.encode_image(x), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts.

        Shape:
            returns (T, D), unit length.
        """
        tokens = self.tokenizer(list(texts)).to(next(self.model.parameters()).device)
        return F.normalize(self.model.encode_text(tokens), dim=-1)


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelEmbedder:
    """Load a model folder in open_clip's hub layout (or a .safetensors written by :func:`save_model`).

    Args:
        path: folder with open_clip_config.json + open_clip_model.safetensors, or a file.
        device: where to put the model.
    """
    import open_clip

    p = Path(path)
    if p.is_file():
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        if "open_clip_config" not in meta:
            raise ValueError(f"{p}: safetensors file has no open_clip_config metadata")
        full = json.loads(meta["open_clip_config"])
        model = build_model(full["model_cfg"])
        model.load_state_dict({k: v.float() for k, v in load_file(str(p)).items()})
        tokenizer = build_tokenizer(full["model_cfg"])
    else:
        full = json.loads((p / "open_clip_config.json").read_text(encoding="utf-8"))
        model = open_clip.create_model("local-dir:" + str(p), device="cpu")
        tokenizer = open_clip.get_tokenizer("local-dir:" + str(p))
    pre = full.get("preprocess_cfg", {})
    model = model.float().to(device).eval().requires_grad_(False)
    return ModelEmbedder(model, tokenizer, pre.get("size", image_size_of(full["model_cfg"])),
                         pre.get("mean", OPENAI_MEAN), pre.get("std", OPENAI_STD))


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; final files get normal permissions
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: torch.nn.Module, model_cfg: Mapping[str, Any], out: str | os.PathLike, *,
               preprocess_cfg: Mapping[str, Any] | None = None,
               provenance: Mapping[str, Any] | None = None,
               dtype: torch.dtype = torch.float16) -> Path:
    """Write a model in open_clip's hub layout (a folder), or as one ``.safetensors`` file.

    A folder gets ``open_clip_config.json`` ({"model_cfg", "preprocess_cfg", "clipforge"}) and
    ``open_clip_model.safetensors``; ``open_clip.create_model("local-dir:" + folder)`` reads it.
    A ``.safetensors`` path gets the weights with the same JSON in its metadata. Each file is
    written to a temporary name and renamed, so no half-written file sits under a final name.

    Args:
        model: the open_clip model.
        model_cfg: its kwargs.
        out: folder, or a path ending in ``.safetensors``.
        preprocess_cfg: {"size", "mean", "std"}; derived from the config when None.
        provenance: stored under "clipforge" in the config.
        dtype: storage dtype of floating-point weights (float16 halves the size; loading
            upcasts to float32).
    """
    from safetensors.torch import save_file

    out = Path(out)
    pre = dict(preprocess_cfg or {"size": image_size_of(model_cfg), "mean": list(OPENAI_MEAN),
                                  "std": list(OPENAI_STD)})
    full: dict[str, Any] = {"model_cfg": dict(model_cfg), "preprocess_cfg": pre}
    if provenance:
        full["clipforge"] = dict(provenance)
    sd = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in model.state_dict().items()}
    if out.suffix == ".safetensors":
        _atomic_write(out, lambda t: save_file(sd, t, metadata={"open_clip_config": json.dumps(full)}))
        return out
    _atomic_write(out / "open_clip_model.safetensors", lambda t: save_file(sd, t))
    _atomic_write(out / "open_clip_config.json",
                  lambda t: Path(t).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8"))
    return out


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------

def read_pairs(data: str | os.PathLike) -> list[tuple[Path, str]]:
    """List (image path, caption) pairs from a folder, a ``.csv`` or a ``.jsonl`` file.

    A folder pairs every image with the same-name ``.txt`` file. A CSV needs a header with an
    image column (``path``, ``image``, ``file`` or ``filepath``) and a caption column
    (``caption``, ``text`` or ``title``); JSONL lines are objects with the same keys. Relative
    image paths are relative to the CSV/JSONL file's folder. Images are checked to exist here
    and decoded by :func:`load_pairs`.

    Args:
        data: the folder or file.
    """
    p = Path(data)
    if not p.exists():
        raise DataError("no such file or folder", p)
    pairs: list[tuple[Path, str]] = []
    if p.is_dir():
        images = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise DataError(f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", p)
        for img in images:
            txt = img.with_suffix(".txt")
            if not txt.is_file():
                raise DataError(f"caption file {txt.name} is missing", img)
            try:
                cap = txt.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"cannot read caption: {e}", txt) from None
            if not cap:
                raise DataError("caption file is empty", txt)
            pairs.append((img, cap))
        return pairs
    rows: Iterator[tuple[int, Mapping[str, Any]]]
    if p.suffix.lower() == ".csv":
        try:
            fh = p.open(encoding="utf-8", newline="")
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read: {e}", p) from None
        with fh:
            img_col, cap_col = _columns(header, p)
            try:
                for row in reader:
                    pairs.append(_pair(row.get(img_col), row.get(cap_col), p, reader.line_num))
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8: {e}", p, reader.line_num + 1) from None
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read: {e}", p) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"bad JSON: {e.msg}", p, n) from None
            if not isinstance(row, dict):
                raise DataError("each line must be a JSON object", p, n)
            img_col, cap_col = _columns(list(row), p, n)
            pairs.append(_pair(row.get(img_col), row.get(cap_col), p, n))
    else:
        raise DataError("expected `shapes`, a folder, or a .csv / .jsonl file", p)
    if not pairs:
        raise DataError("no (image, caption) rows", p)
    return pairs


_IMG_COLS = ("path", "image", "file", "filepath", "filename")
_CAP_COLS = ("caption", "text", "title")


def _columns(header: Sequence[str], p: Path, line: int | None = None) -> tuple[str, str]:
    if not header:
        raise DataError("empty file (no header)", p, line)
    img = next((c for c in _IMG_COLS if c in header), None)
    cap = next((c for c in _CAP_COLS if c in header), None)
    if img is None or cap is None:
        need = f"an image column ({', '.join(_IMG_COLS)})" if img is None else \
            f"a caption column ({', '.join(_CAP_COLS)})"
        raise DataError(f"missing column: need {need}; found {', '.join(header)}", p, line)
    return img, cap


def _pair(img: Any, cap: Any, p: Path, line: int) -> tuple[Path, str]:
    if not isinstance(img, str) or not img.strip():
        raise DataError("empty image path", p, line)
    if not isinstance(cap, str) or not cap.strip():
        raise DataError("empty caption", p, line)
    ip = Path(img.strip())
    ip = ip if ip.is_absolute() else p.parent / ip
    if not ip.is_file():
        raise DataError(f"image {str(ip)!r} not found", p, line)
    return ip, cap.strip()


def load_pairs(pairs: Sequence[tuple[Path, str]], image_size: int) -> torch.Tensor:
    """Decode images, resize their short side to ``image_size`` and centre-crop (kept in memory).

    Args:
        pairs: from :func:`read_pairs`.
        image_size: output side.

    Shape:
        returns (N, 3, image_size, image_size) uint8.
    """
    from clipforge.images import load_image

    out = torch.empty(len(pairs), 3, image_size, image_size, dtype=torch.uint8)
    for i, (path, _) in enumerate(pairs):
        try:
            x = load_image(path, field="data")
        except ValueError as e:
            raise DataError(str(e), path) from None
        h, w = x.shape[-2:]
        s = image_size / min(h, w)
        nh, nw = max(image_size, round(h * s)), max(image_size, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - image_size) // 2, (nw - image_size) // 2
        x = x[..., top:top + image_size, left:left + image_size]
        out[i] = (x[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return out


@dataclass
class Batch:
    """A training batch: images in [0,1], captions, and which caption is true of which image."""

    images: torch.Tensor
    captions: list[str]
    match: torch.Tensor | None = None
    keep: torch.Tensor | None = None  # (N,2) points in [0,1] that crops must contain


class _ShapesSource:
    def __init__(self, image_size: int, batch_size: int):
        from clipforge.training.shapes import ShapesDataset

        self.ds = ShapesDataset(image_size=image_size)
        self.batch_size = batch_size

    def next(self, g: torch.Generator) -> Batch:
        b = self.ds.sample(self.batch_size, g)
        return Batch(b.images, b.captions, b.match_matrix(), b.centre)


class _PairsSource:
    def __init__(self, pairs: Sequence[tuple[Path, str]], image_size: int, batch_size: int):
        self.images = load_pairs(pairs, image_size)
        self.captions = [c for _, c in pairs]
        self.batch_size = min(batch_size, len(pairs))
        ids = {c: i for i, c in enumerate(dict.fromkeys(self.captions))}
        self.caption_id = torch.tensor([ids[c] for c in self.captions])

    def next(self, g: torch.Generator) -> Batch:
        idx = torch.randperm(len(self.captions), generator=g)[: self.batch_size]
        cid = self.caption_id[idx]
        return Batch(self.images[idx].float() / 255, [self.captions[i] for i in idx.tolist()],
                     cid[:, None] == cid[None, :])


# ------------------------------------------------------------------------------------------
# augmentation and loss
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augment:
    """Batched training augmentation; all randomness from the generator passed in.

    Args:
        scale: range of the crop's area as a fraction of the image (random resized crop).
        ratio: range of the crop's aspect ratio (log-uniform).
        flip: probability of a horizontal flip.
        noise: maximum std of additive Gaussian noise (each image draws its own in [0, noise]).
        brightness: maximum relative brightness change.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    noise: float = 0.06
    brightness: float = 0.1

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
        n = x.shape[0]
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
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = 1 + self.brightness * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
        sigma = self.noise * torch.rand(n, 1, 1, 1, generator=g)
        y = y * bright.to(y) + sigma.to(y) * torch.randn(y.shape, generator=g).to(y)
        return y.clamp(0, 1)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor, match: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the image-text similarity matrix (Radford et al. 2021).

    Args:
        image_features: unit-length image embeddings.
        text_features: unit-length text embeddings (row i is the caption of image i).
        logit_scale: the temperature's inverse (already exponentiated), a scalar.
        match: optional bool matrix, ``match[i, j]`` True when caption j is true of image i;
            targets are then spread uniformly over the true pairs. None means the identity
            (CLIP's loss exactly).

    Shape:
        image_features, text_features: (N, D); match: (N, N); returns a scalar.
    """
    logits = logit_scale * image_features @ text_features.t()
    if match is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    t = match.to(logits.dtype)
    t_img = t / t.sum(1, keepdim=True)
    t_txt = t.t() / t.t().sum(1, keepdim=True)
    loss_i = -(t_img * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_txt * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (eval mode).
        model_cfg: its open_clip kwargs.
        step: steps done in total (including resumed ones).
        losses: loss per step of this run.
        seconds: wall time of this run.
        zero_shot: shapes val accuracies ({"colour", "shape", "colour+shape", "n"}) or None.
        logit_scale: final learned temperature (exponentiated).
    """

    model: torch.nn.Module
    model_cfg: dict[str, Any]
    step: int
    losses: list[float]
    seconds: float
    zero_shot: dict[str, float] | None = None
    logit_scale: float = 0.0
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)

    def embedder(self) -> ModelEmbedder:
        """A :class:`ModelEmbedder` over the trained model."""
        return ModelEmbedder(self.model, build_tokenizer(self.model_cfg),
                             self.preprocess_cfg.get("size", image_size_of(self.model_cfg)),
                             self.preprocess_cfg.get("mean", OPENAI_MEAN),
                             self.preprocess_cfg.get("std", OPENAI_STD))


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # as open_clip's trainer: no decay on gains, biases, embeddings' scale and temperature
        (no_decay if p.ndim < 2 or "logit_scale" in name or "ln" in name or "bn" in name
         or "token_embedding" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a training checkpoint atomically (temporary file, then ``os.replace``)."""
    _atomic_write(Path(path), lambda t: torch.save(dict(state), t))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``: no pickled code runs)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("checkpoint not found", p)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a data error
        raise DataError(f"not a clipforge training checkpoint ({type(e).__name__}: {e})", p) from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "step", "rng"} <= set(ckpt):
        raise DataError("not a clipforge training checkpoint (keys model, optimizer, step, rng)", p)
    return ckpt


def train(data: str | os.PathLike, config: str | os.PathLike | Mapping[str, Any] = "shapes-vit-s",
          *, steps: int = 500, batch_size: int = 128, lr: float = 1e-3,
          weight_decay: float = 0.1, warmup: int | None = None, seed: int = 0,
          augment: Augment | None = Augment(), checkpoint: str | os.PathLike | None = None,
          checkpoint_every: int = 0, resume: str | os.PathLike | None = None,
          progress: bool = False, eval_n: int = 512,
          callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train an open_clip CLIP contrastively (Radford et al. 2021) on captioned images.

    Args:
        data: ``"shapes"``, a folder of images + same-name ``.txt`` captions, or a .csv/.jsonl.
        config: model config (see :func:`resolve_config`).
        steps: total optimizer steps (a resumed run continues up to this number).
        batch_size: pairs per step (the N of the N x N similarity matrix).
        lr: peak AdamW learning rate (linear warm-up, then cosine decay to 0).
        weight_decay: AdamW weight decay on weight matrices.
        warmup: warm-up steps (default: 5% of steps).
        seed: seeds the model initialisation, the data and the augmentation generators.
        augment: training augmentation, or None for none.
        checkpoint: where to save checkpoints (model, optimizer, step, RNG states).
        checkpoint_every: save every K steps (0: only at the end, if ``checkpoint`` is set).
        resume: a checkpoint to continue from (its step, optimizer and RNG states).
        progress: show a progress bar on stderr.
        eval_n: size of the shapes val split for the final zero-shot evaluation.
        callback: called as ``callback(step, loss)`` after every step (and its checkpoint).
    """
    for name, v, lo in (("steps", steps, 1), ("batch_size", batch_size, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > 10**7:
            raise ValueError(f"{name}: {v!r} is out of range; allowed: {lo} to 10000000")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= 10):
        raise ValueError(f"lr: {lr!r} is out of range; allowed: > 0 and <= 10")
    model_cfg = resolve_config(config)
    size = image_size_of(model_cfg)
    is_shapes = str(data) == "shapes"
    source = _ShapesSource(size, batch_size) if is_shapes else \
        _PairsSource(read_pairs(data), size, batch_size)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None and ckpt.get("model_cfg") not in (None, model_cfg):
        model_cfg = ckpt["model_cfg"]  # the checkpoint's architecture wins over the flag

    with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG:
        torch.manual_seed(seed)              # seed it here without touching the caller's
        model = build_model(model_cfg)
    tokenizer = build_tokenizer(model_cfg)
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    g_data = torch.Generator().manual_seed(seed * 2 + 1)
    g_aug = torch.Generator().manual_seed(seed * 2 + 2)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        g_data.set_state(ckpt["rng"]["data"])
        g_aug.set_state(ckpt["rng"]["augment"])
        start = int(ckpt["step"])
    warmup = max(1, steps // 20) if warmup is None else warmup
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(caps: list[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(caps) if c not in token_cache]
        if new:
            for c, t in zip(new, tokenizer(new)):
                token_cache[c] = t
        return torch.stack([token_cache[c] for c in caps])

    def state(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "rng": {"data": g_data.get_state(), "augment": g_aug.get_state()},
                "model_cfg": model_cfg, "seed": seed, "data": str(data)}

    losses: list[float] = []
    t0 = time.perf_counter()
    bar = _progress(progress, steps, start)
    model.train()
    try:
        for step in range(start, steps):
            batch = source.next(g_data)
            x = batch.images
            if augment is not None:
                x = augment(x, g_aug, batch.keep)
            for grp in opt.param_groups:
                grp["lr"] = _lr_at(step, steps, lr, warmup)
            img = F.normalize(model.encode_image((x - mean) / std), dim=-1)
            txt = F.normalize(model.encode_text(tokens(batch.captions)), dim=-1)
            loss = contrastive_loss(img, txt, model.logit_scale.exp(), batch.match)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step + 1}; lower --lr")
            losses.append(value)
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"loss {value:.3f}")
            if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                save_checkpoint(checkpoint, state(step + 1))
            if callback is not None:
                callback(step + 1, value)
    finally:
        if bar is not None:
            bar[0].stop()
    done = max(start, steps)
    if checkpoint is not None:
        save_checkpoint(checkpoint, state(done))
    model.eval()
    pre = {"size": size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    result = TrainResult(model, model_cfg, done, losses, time.perf_counter() - t0,
                         logit_scale=float(model.logit_scale.detach().exp()), preprocess_cfg=pre)
    if is_shapes and eval_n:
        with torch.no_grad():
            result.zero_shot = shapes_zero_shot(result.embedder(), n=eval_n)
    return result


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(),
                 TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    task = p.add_task("training", total=total, completed=start)
    p.start()
    return p, task


# ------------------------------------------------------------------------------------------
# zero-shot and linear probe
# ------------------------------------------------------------------------------------------

def _as_embedder(embedder_or_model: Any) -> Any:
    m = embedder_or_model
    if not (isinstance(m, torch.nn.Module) and hasattr(m, "visual") and hasattr(m, "logit_scale")):
        return m  # already an Embedder
    model = m  # an open_clip model: use the default tokenizer and its size
    import open_clip

    ctx = getattr(model, "context_length", 77)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ModelEmbedder(model, open_clip.SimpleTokenizer(context_length=ctx), size)


from clipforge.guidance.embedders import encode_images  # noqa: E402


@torch.no_grad()
def text_classifier(embedder: Any, labels: Sequence[str],
                    template: str | Sequence[str] = "a photo of a {}") -> torch.Tensor:
    """Unit-length text embedding per label; several templates are averaged (prompt ensembling).

    Args:
        embedder: an Embedder.
        labels: class names.
        template: one template with ``{}``, or several.

    Shape:
        returns (len(labels), D).
    """
    templates = [template] if isinstance(template, str) else list(template)
    if not labels or not templates:
        raise ValueError("labels: need at least one label and one template")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template: {t!r} has no {{}} for the label")
    emb = torch.stack([embedder.encode_text([t.format(lab) for lab in labels])
                       for t in templates]).mean(0)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def zero_shot(embedder_or_model: Any, images: torch.Tensor, labels: Sequence[str],
              template: str | Sequence[str] = "a photo of a {}",
              logit_scale: float = 100.0) -> torch.Tensor:
    """Zero-shot classification: softmax over image-to-label-prompt similarities (Radford et al. 2021).

    Args:
        embedder_or_model: an Embedder (``encode_image``/``encode_text``) or an open_clip model.
        images: images to classify.
        labels: class names, put into ``template``.
        template: a template with ``{}`` or a list of them (their text embeddings are averaged).
        logit_scale: softmax temperature's inverse (CLIP uses 100).

    Shape:
        images: (N, 3, H, W) in [0, 1]; returns (N, len(labels)) probabilities.
    """
    emb = _as_embedder(embedder_or_model)
    text = text_classifier(emb, list(labels), template)
    img = encode_images(emb, images)
    return (logit_scale * img @ text.t()).softmax(-1)


def shapes_zero_shot(embedder: Any, n: int = 512, seed: int = 0,
                     templates: Sequence[str] | None = None) -> dict[str, float]:
    """Zero-shot accuracy on the shapes val split: colour, shape, and both at once.

    Every (colour, shape) pair is a class ("a red circle"); colour and shape accuracy take the
    arg-max of the class probabilities summed over the other attribute.

    Args:
        embedder: an Embedder (or an open_clip model) trained at the data set's image size.
        n: number of val images.
        seed: the split's base seed.
        templates: prompt templates (default: the caption phrasings without background).
    """
    from clipforge.training.shapes import COLOUR_NAMES, PHRASINGS, SHAPES, ShapesDataset

    emb = _as_embedder(embedder)
    size = getattr(emb, "image_size", 64)
    val = ShapesDataset(image_size=max(32, min(256, int(size)))).split("val", n, seed)
    combos = [(c, s) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPES))]
    if templates is None:
        templates = [t.replace("{c} {s}", "{}").replace("{s} that is {c}", "{}") for t in PHRASINGS
                     if "{c} {s}" in t]
    labels = [f"{COLOUR_NAMES[c]} {SHAPES[s]}" for c, s in combos]
    probs = zero_shot(emb, val.images, labels, templates)
    p = probs.view(n, len(COLOUR_NAMES), len(SHAPES))
    colour = p.sum(2).argmax(1)
    shape = p.sum(1).argmax(1)
    both = probs.argmax(1)
    truth = val.colour * len(SHAPES) + val.shape
    return {"colour": float((colour == val.colour).float().mean()),
            "shape": float((shape == val.shape).float().mean()),
            "colour+shape": float((both == truth).float().mean()),
            "n": n}


@dataclass
class LinearProbe:
    """A logistic-regression classifier on frozen image features.

    Attributes:
        classifier: the fitted linear layer (features -> classes).
        classes: class names in output order.
        train_accuracy: accuracy on the training images.
        test_accuracy: accuracy on the test images, when given.
    """

    classifier: torch.nn.Linear
    classes: list[Any]
    train_accuracy: float
    test_accuracy: float | None = None


def linear_probe(embedder: Any, images: torch.Tensor, labels: Sequence[Any], *,
                 test_images: torch.Tensor | None = None, test_labels: Sequence[Any] | None = None,
                 weight_decay: float = 1e-4, steps: int = 100) -> LinearProbe:
    """Fit logistic regression on frozen image features (the CLIP paper's linear-probe protocol).

    Args:
        embedder: an Embedder or open_clip model; it stays frozen.
        images: training images.
        labels: one label per image (any hashable values).
        test_images, test_labels: optional held-out set to report accuracy on.
        weight_decay: L2 penalty on the weights.
        steps: LBFGS iterations.

    Shape:
        images: (N, 3, H, W) in [0, 1].
    """
    emb = _as_embedder(embedder)
    if len(labels) != images.shape[0]:
        raise ValueError(f"labels: {len(labels)} labels for {images.shape[0]} images")
    classes = list(dict.fromkeys(labels))
    if len(classes) < 2:
        raise ValueError("labels: need at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[lab] for lab in labels])
    feats = encode_images(emb, images).float()
    clf = torch.nn.Linear(feats.shape[1], len(classes))
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(feats), y) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    clf.requires_grad_(False)
    train_acc = float((clf(feats).argmax(1) == y).float().mean())
    test_acc = None
    if test_images is not None and test_labels is not None:
        known = [index.get(lab, -1) for lab in test_labels]
        pred = clf(encode_images(emb, test_images).float()).argmax(1)
        test_acc = float((pred == torch.tensor(known)).float().mean())
    return LinearProbe(clf, classes, train_acc, test_acc)
