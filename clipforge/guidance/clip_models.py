"""Loading CLIP models by spec into frozen :class:`~clipforge.guidance.embedders.ClipEmbedder` objects.

A model is named by a *spec* string:

- ``shapes`` / ``shapes-judge``: the small models bundled with clipforge (offline; see
  :mod:`clipforge.pretrained`);
- ``ViT-B-32:laion2b_s34b_b79k``: an open_clip architecture and pretrained tag (downloaded
  and cached by open_clip through huggingface_hub);
- ``ViT-B-32:/path/to/weights.bin``: an open_clip architecture and a local weights file
  (safetensors or PyTorch; the format is read from the content);
- ``/path/to/folder`` or ``local-dir:/path``: a folder in open_clip's hub layout
  (``open_clip_config.json`` + weights);
- ``hf-hub:org/repo``: such a folder on the Hugging Face hub;
- ``hf:openai/clip-vit-base-patch32`` or ``hf:/path``: a transformers ``CLIPModel`` /
  ``SiglipModel`` (hub id or ``save_pretrained`` folder; a plain folder of one works too),
  with the model's own preprocessing (:mod:`clipforge.guidance.hf_clip`);
- ``ViT-B-32:random``: random initial weights (tests and benchmarks).

Any spec may end in ``@W`` to weight it inside an ensemble: ``shapes@1,shapes-judge@0.5``.
:class:`ModelCache` keeps loaded models for every run of a process (a batch worker, the studio).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import torch

from clipforge import pretrained
from clipforge.errors import ModelLoadError, WeightsError, first_line
from clipforge.offline import before_hub_access, offline_reason
from clipforge.guidance.embedders import OPENAI_MEAN, OPENAI_STD, ClipEmbedder, Ensemble, \
    split_weight


def _open_clip():
    import open_clip

    return open_clip


def _image_size(model) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _wrap(model, tokenizer, name: str, device) -> ClipEmbedder:
    mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_STD
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
    from clipforge.weights import load_state_dict

    oc = _open_clip()
    cfg = folder / "open_clip_config.json"
    if not cfg.is_file():
        raise _error(f"clip {name!r}: folder {str(folder)!r} has no open_clip_config.json "
                             "(expected open_clip's hub layout: open_clip_config.json + weights)")
    weights = [folder / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                                    "model.safetensors", "pytorch_model.bin")
               if (folder / n).is_file()]
    if not weights:
        raise _error(f"clip {name!r}: folder {str(folder)!r} has no weights file "
                             "(open_clip_model.safetensors or open_clip_pytorch_model.bin)")
    try:
        model = _quiet_create(oc, f"local-dir:{folder}", load_weights=False)
        tokenizer = oc.get_tokenizer(f"local-dir:{folder}")
        _load_into(model, load_state_dict(weights[0]), name, weights[0])
    except WeightsError as e:
        raise _error(f"clip {name!r}: {e}") from None
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise _error(f"clip {name!r}: cannot build the model in {str(folder)!r}: {e}") from None
    return _wrap(model, tokenizer, name, device)


def _load_into(model: nn.Module, sd: dict, name: str, path) -> None:
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a tensor of another shape: weights of another architecture
        shapes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise _error(f"clip {name!r}: weights in {str(path)!r} are for another architecture "
                     f"than {name.partition(':')[0]} ({len(shapes)} tensor(s) of another shape, "
                     f"e.g. {(shapes or [first_line(e)])[0][:240]})") from None
    if result.missing_keys or result.unexpected_keys:
        raise _error(
            f"clip {name!r}: weights in {str(path)!r} do not match the architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")


def _available_message(oc) -> str:
    models = oc.list_models()
    return (f"bundled: {', '.join(pretrained.names('clip'))}; open_clip architectures ({len(models)}): "
            f"{', '.join(models[:12])}, ... (see `clipforge models`); or a folder / "
            "`NAME:/path/to/weights`")


def resolve_spec(spec: str) -> tuple[str, str, str]:
    """Check a spec without loading anything: ``(kind, name, where)`` saying how to load it.

    ``kind`` is ``folder`` (``where`` the folder), ``hf`` (a transformers CLIP/SigLIP id or
    folder), ``hub`` (an ``hf-hub:`` id), ``random``,
    ``file`` (``where`` the weights file) or ``pretrained`` (``where`` the tag).

    Raises:
        ModelLoadError: (field ``clip``) unknown name or tag, listing what exists; a bundled
            model or a weights file that is missing.
    """
    name, _ = split_weight(spec)
    bundled = pretrained.get(name, "clip")
    if bundled is not None:
        if not bundled.present:
            raise _error(f"clip {name!r}: the bundled model is missing from "
                         f"{bundled.path} (run {bundled.recipe})")
        return "folder", name, str(bundled.path)
    if name.startswith("local-dir:"):
        return "folder", name, name[len("local-dir:"):]
    if name.startswith("hf:"):   # a transformers CLIPModel / SiglipModel: hub id or folder
        return "hf", name, name[3:]
    if Path(name).is_dir():
        from clipforge.guidance.hf_clip import is_hf_folder

        return ("hf" if is_hf_folder(Path(name)) else "folder"), name, name
    if name.startswith("hf-hub:"):
        return "hub", name, name
    oc = _open_clip()
    arch, sep, tag = name.partition(":")
    if arch not in oc.list_models():
        if Path(name).is_file():
            raise _error(f"clip {name!r}: a weights file alone does not say its "
                         "architecture; use ARCH:PATH, e.g. ViT-B-32:" + name)
        raise _error(f"clip {name!r}: unknown model. Available: {_available_message(oc)}")
    tags = oc.list_pretrained_tags_by_model(arch)
    if not sep:
        raise _error(f"clip {name!r}: name a pretrained tag, e.g. {arch}:{tags[0] if tags else 'TAG'}"
                     f" (tags: {', '.join(tags) or 'none'}; or {arch}:/path/to/weights, or "
                     f"{arch}:random)")
    if tag == "random":
        return "random", name, ""
    if Path(tag).exists() or "/" in tag or "\\" in tag or tag.endswith((".bin", ".pt", ".pth", ".safetensors")):
        if not Path(tag).is_file():
            raise _error(f"clip {name!r}: weights file {tag!r} does not exist or is not a file")
        return "file", name, tag
    if tag not in tags:
        raise _error(f"clip {name!r}: unknown pretrained tag {tag!r} for {arch}; "
                     f"available tags: {', '.join(tags) or 'none'}")
    return "pretrained", name, tag


def _error(message: str) -> ModelLoadError:
    return ModelLoadError(message, "clip")


def load_embedder(spec: str, device: str | torch.device = "cpu") -> ClipEmbedder:
    """Load one CLIP model by spec (see the module docstring) as a frozen ClipEmbedder.

    Raises:
        ModelLoadError: unknown name or tag (listing what exists), missing or corrupt weights,
            weights of another architecture, or a failed download (naming the file and how to
            use a local copy instead).
    """
    kind, name, where = resolve_spec(spec)
    if kind == "folder":
        return _load_folder(Path(where), name, device)
    if kind == "hf":
        from clipforge.guidance.hf_clip import load_hf_embedder

        return load_hf_embedder(where, name, device)
    oc = _open_clip()
    if kind == "hub":
        before_hub_access()
        try:
            model = oc.create_model(name)
            return _wrap(model, oc.get_tokenizer(name), name, device)
        except Exception as e:
            raise _error(_download_hint(name, e)) from None
    arch = name.partition(":")[0]
    if kind == "random":
        return _wrap(_quiet_create(oc, arch), oc.get_tokenizer(arch), name, device)
    if kind == "file":
        from clipforge.weights import load_state_dict

        try:
            sd = load_state_dict(where)
        except WeightsError as e:
            raise _error(f"clip {name!r}: {e}") from None
        model = _quiet_create(oc, arch)
        _load_into(model, sd, name, where)
        return _wrap(model, oc.get_tokenizer(arch), name, device)
    before_hub_access()
    try:
        model = oc.create_model(arch, pretrained=where)
    except Exception as e:
        raise _error(_download_hint(name, e)) from None
    return _wrap(model, oc.get_tokenizer(arch), name, device)


def _download_hint(name: str, err: Exception) -> str:
    reason = offline_reason()
    why = f"{first_line(err)}" + (f"; offline: {reason}" if reason else "")
    if name.startswith("hf-hub:"):
        local = ("download that repo's folder (open_clip_config.json and "
                 "open_clip_model.safetensors) on another machine and pass `--clip "
                 "/path/to/that/folder`")
    else:
        local = (f"download open_clip_pytorch_model.bin (or open_clip_model.safetensors) on "
                 f"another machine and pass `--clip {name.partition(':')[0]}:/path/to/that/file`, "
                 "or a folder holding it with open_clip_config.json")
    return f"clip {name!r}: could not fetch the weights ({why}). If this machine is offline, {local}."


class ModelCache:
    """Loaded embedders shared by every run in a process (the UI's sessions, a batch worker)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], ClipEmbedder] = {}
        self._lock = threading.Lock()

    def get(self, spec: str, device: str | torch.device = "cpu") -> ClipEmbedder:
        key = (split_weight(spec)[0], str(torch.device(device)))
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
        name, weight = split_weight(spec)
        emb = cache.get(name, device) if cache is not None else load_embedder(name, device)
        members.append((emb, weight))
    return Ensemble(tuple(members))


__all__ = ["resolve_spec", "load_embedder", "load_ensemble", "ModelCache", "ModelLoadError"]
