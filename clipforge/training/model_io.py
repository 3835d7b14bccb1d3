"""Model configs, building, saving and loading of the CLIPs that clipforge trains.

A model is any open_clip ``CLIP``, described by its keyword arguments (``model_cfg``). The
small configs for 64 px images live as data in ``training/configs/<name>.json``, one file per
config, as open_clip keeps its model configs:

- ``shapes-rn-s``: a small ModifiedResNet (CLIP's RN50 design: 4 stages of one bottleneck,
  attention pooling); ~0.2 s per step of 128 on 2 CPU cores; the bundled ``shapes`` guide;
- ``shapes-rn-xs``: a narrower, deeper ModifiedResNet; the bundled ``shapes-judge``;
- ``shapes-vit-s`` / ``shapes-vit-xs``: tiny ViTs on 64 px, patch 8 (other width and depth);
- ``tiny``: for tests, a fraction of a second per step.

Saved models use open_clip's hub layout (``open_clip_config.json`` + safetensors weights),
so ``open_clip.create_model("local-dir:" + folder)`` and clipforge's model loader read them.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from clipforge.errors import ConfigError, ModelLoadError
from clipforge.guidance.embedders import OPENAI_MEAN, OPENAI_STD, ClipEmbedder

CONFIG_DIR = Path(__file__).with_name("configs")
"""Folder of the small model configs, one ``<name>.json`` each."""


class _Configs(Mapping):
    """Read-only view of the JSON configs by name; each lookup returns a fresh dict."""

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and "/" not in name and "\\" not in name
                and (CONFIG_DIR / f"{name}.json").is_file())

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self:
            raise KeyError(name)
        return json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

    def __len__(self) -> int:
        return len(list(CONFIG_DIR.glob("*.json")))


CONFIGS: Mapping[str, dict[str, Any]] = _Configs()
"""The small configs by name (read from :data:`CONFIG_DIR`)."""


def resolve_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Turn a config name, JSON file or dict into open_clip ``CLIP`` keyword arguments.

    Args:
        config: a name from :data:`CONFIGS`, an open_clip built-in name (``ViT-B-32``), a JSON
            file (plain kwargs or ``{"model_cfg": ...}`` as in open_clip_config.json), or a dict.

    Raises:
        ConfigError: (field ``config``) unknown name, unreadable file, or missing keys.
    """
    if isinstance(config, Mapping):
        cfg = dict(config.get("model_cfg", config))
    elif str(config) in CONFIGS:
        cfg = CONFIGS[str(config)]
    elif str(config).endswith(".json") or Path(config).is_file():
        p = Path(config)
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("config", f"cannot read model config {str(p)!r}: {e}") from None
        if not isinstance(cfg, dict):
            raise ConfigError("config", f"{str(p)!r} must hold a JSON object")
        cfg = dict(cfg.get("model_cfg", cfg))
    else:
        import open_clip

        cfg = open_clip.get_model_config(str(config))
        if cfg is None:
            raise ConfigError("config", f"unknown model config {str(config)!r}; small configs: "
                              f"{', '.join(CONFIGS)}; open_clip configs: "
                              f"{', '.join(open_clip.list_models()[:12])}, ...")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ConfigError("config", f"model config lacks {', '.join(missing)}")
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
    """The tokenizer open_clip would pick for this config (offline for the default BPE).

    Args:
        model_cfg: open_clip CLIP kwargs.
    """
    import open_clip

    text_cfg = model_cfg.get("text_cfg", {})
    ctx = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx)
    return open_clip.SimpleTokenizer(context_length=ctx)


def image_size_of(model_cfg: Mapping[str, Any]) -> int:
    """The square input side of the config's vision tower.

    Args:
        model_cfg: open_clip CLIP kwargs.
    """
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def default_preprocess(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` for a model trained here: its size, OpenAI mean/std.

    Args:
        model_cfg: open_clip CLIP kwargs.
    """
    return {"size": image_size_of(model_cfg), "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}


def embedder_of(model: torch.nn.Module, model_cfg: Mapping[str, Any],
                preprocess_cfg: Mapping[str, Any] | None = None, *, frozen: bool = False,
                name: str = "trained") -> ClipEmbedder:
    """The project's one embedder over ``model`` (``frozen=False``: its mode and grads are left).

    Args:
        model: an open_clip CLIP built from ``model_cfg``.
        model_cfg: its kwargs (for the tokenizer and the default input size).
        preprocess_cfg: {"size", "mean", "std"}; :func:`default_preprocess` when None or partial.
        frozen: freeze the model (eval mode, no grads), as for a loaded model.
        name: the embedder's name in messages.
    """
    pre = {**default_preprocess(model_cfg), **dict(preprocess_cfg or {})}
    return ClipEmbedder(model, build_tokenizer(model_cfg), pre["size"], pre["mean"], pre["std"],
                        name, frozen=frozen)


def save_model(model: torch.nn.Module, model_cfg: Mapping[str, Any], out: str | os.PathLike, *,
               preprocess_cfg: Mapping[str, Any] | None = None,
               provenance: Mapping[str, Any] | None = None,
               dtype: torch.dtype = torch.float16) -> Path:
    """Write a model in open_clip's hub layout (a folder), or as one ``.safetensors`` file.

    A folder gets ``open_clip_config.json`` ({"model_cfg", "preprocess_cfg", "clipforge"}) and
    ``open_clip_model.safetensors``. A ``.safetensors`` path gets the weights with the same
    JSON in its metadata. Each file goes through :func:`clipforge.outputs.atomic_path`, so no
    half-written file sits under a final name.

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

    from clipforge.outputs import atomic_path

    out = Path(out)
    pre = dict(preprocess_cfg or default_preprocess(model_cfg))
    full: dict[str, Any] = {"model_cfg": dict(model_cfg), "preprocess_cfg": pre}
    if provenance:
        full["clipforge"] = dict(provenance)
    sd = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
          for k, v in model.state_dict().items()}
    single = out.suffix == ".safetensors"
    (out.parent if single else out).mkdir(parents=True, exist_ok=True)
    if single:
        with atomic_path(out) as tmp:
            save_file(sd, str(tmp), metadata={"open_clip_config": json.dumps(full)})
        return out
    with atomic_path(out / "open_clip_model.safetensors") as tmp:
        save_file(sd, str(tmp))
    with atomic_path(out / "open_clip_config.json") as tmp:
        tmp.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return out


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> ClipEmbedder:
    """Load a model saved by :func:`save_model` as a frozen ClipEmbedder.

    Args:
        path: a folder in open_clip's hub layout (read by
            :func:`clipforge.guidance.clip_models.load_embedder`), or a ``.safetensors`` file
            carrying its ``open_clip_config`` in the metadata.
        device: where to put the model.

    Raises:
        ModelLoadError: the folder or file is not such a model.
    """
    from clipforge.errors import WeightsError
    from clipforge.weights import load_state_dict, safetensors_metadata, sniff_format

    p = Path(path)
    if not p.is_file():
        from clipforge.guidance.clip_models import load_embedder

        return load_embedder(f"local-dir:{p}", device)
    try:
        meta = safetensors_metadata(p) if sniff_format(p) == "safetensors" else {}
        if "open_clip_config" not in meta:
            raise ModelLoadError(f"{p}: safetensors file has no open_clip_config metadata")
        full = json.loads(meta["open_clip_config"])
        model = build_model(full["model_cfg"])
        model.load_state_dict({k: v.float() for k, v in load_state_dict(p).items()})
    except WeightsError as e:
        raise ModelLoadError(str(e)) from None
    return embedder_of(model.float(), full["model_cfg"], full.get("preprocess_cfg"), frozen=True,
                       name=str(p)).to(device)


__all__ = ["CONFIGS", "CONFIG_DIR", "resolve_config", "build_model", "build_tokenizer",
           "image_size_of", "default_preprocess", "embedder_of", "save_model", "load_model_dir"]
