"""Loading model files from a local folder or the Hugging Face hub, with errors that say what to do.

The vae, vqgan, biggan and diffusion generators all take ``model`` as either a hub id
(``org/name``) or a local folder, and all must fail the same way when the hub cannot be reached
(these machines are offline): with the one hint below, naming the download command and the
``model=DIR`` to pass instead. Everything here reads configs before weights, so a wrong size or
class is refused before anything heavy loads. Weights load the way diffusers loads them
(safetensors first; PyTorch files with ``weights_only``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipforge import pretrained
from clipforge.errors import ConfigError, first_line
from clipforge.fields import check_multiple
from clipforge.offline import before_hub_access, offline_reason

DIFFUSERS_FILES = "config.json and diffusion_pytorch_model.safetensors"


def is_local_path(model: str) -> bool:
    """True when ``model`` names a local folder rather than a hub id (``org/name``).

    Args:
        model: the ``model`` option as given (``~`` allowed; Windows paths recognized).
    """
    p = Path(model).expanduser()
    return p.exists() or model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 \
        or "\\" in model or (len(model) > 1 and model[1] == ":")


def bundled_or_given(model: str, subfolder: str | None, kind: str) -> tuple[str, str | None]:
    """``(folder, None)`` for a bundled model's name (``shapes-vae``), else ``(model, subfolder)``.

    A bundled model is a model folder itself, so a subfolder given for hub repos (the vqgan
    generator's default ``vqvae``) does not apply to it.

    Args:
        model: the ``model`` option as given.
        subfolder: the ``subfolder`` option as given.
        kind: the kind of bundled model that may be meant (``autoencoder``).

    Raises:
        ConfigError: the name is bundled but its files are missing (names the recipe).
    """
    bundled = pretrained.get(model, kind) if isinstance(model, str) else None
    if bundled is None:
        return model, subfolder
    if not bundled.present:
        raise ConfigError("model", bundled.missing)
    return str(bundled.path), None


def offline_hint(what: str, model: str, subfolder: str | None, err: BaseException,
                 files: str = DIFFUSERS_FILES) -> str:
    """The message for a failed hub download: what failed, and how to pass a local folder.

    Args:
        what: a noun for the model (``autoencoder``, ``BigGAN``).
        model: the hub id that failed.
        subfolder: the folder inside the repo, or None.
        err: the download's exception (its first line is quoted).
        files: what the local folder must hold.
    """
    sub = f" (subfolder {subfolder!r})" if subfolder else ""
    reason = offline_reason()
    why = first_line(err) + (f"; offline: {reason}" if reason else "")
    return (f"cannot load {what} {model!r}{sub} from the Hugging Face hub "
            f"({why}). If this machine is offline, download it on "
            f"another one (`huggingface-cli download {model} --local-dir DIR`) and pass the "
            f"local folder instead: model=DIR (a folder holding {files})")


def hub_file(model: str, filename: str, subfolder: str | None = None, *, what: str,
             field: str = "model", files: str = DIFFUSERS_FILES) -> Path:
    """Download one file of a hub repo (``hf_hub_download``); a failure gets :func:`offline_hint`.

    Args:
        model: the hub id.
        filename: the file in the repo.
        subfolder: the folder inside the repo, or None.
        what: a noun for messages.
        field: the option named in errors.
        files: what a local folder must hold instead (for the hint).

    Raises:
        ConfigError: on ``field``, when the download fails for any reason (offline, unknown
            or gated repo).
    """
    from huggingface_hub import hf_hub_download

    before_hub_access()
    try:
        return Path(hf_hub_download(model, filename, subfolder=subfolder or None))
    except Exception as e:  # offline, unknown repo, gated repo: all end in one clear message
        raise ConfigError(field, offline_hint(what, model, subfolder, e, files)) from None


def read_model_config(model: str, subfolder: str | None = None, *, what: str,
                      field: str = "model") -> dict[str, Any]:
    """The ``config.json`` of a diffusers model folder or hub repo, read without loading weights.

    Args:
        model: hub id (``org/name``) or local folder.
        subfolder: folder inside it (``vae``, ``vqvae``), or None.
        what: a noun for messages (``autoencoder``).
        field: the option named in errors.

    Raises:
        ConfigError: missing folder or config, or a failed download (saying how to go offline).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(field, f"{what}: expected a hub id (org/name) or a local folder, "
                          f"got {model!r}")
    if is_local_path(model):
        folder = Path(model).expanduser() / (subfolder or "")
        cfg_file = folder / "config.json"
        if not folder.is_dir():
            if subfolder and (Path(model).expanduser() / "config.json").is_file():
                raise ConfigError(field, f"{what}: {model!r} holds the model itself, not in a "
                                  f"{subfolder!r} subfolder; pass \"subfolder\": null, e.g. "
                                  f"--generator-options '{{\"model\": \"{model}\", "
                                  "\"subfolder\": null}'")
            raise ConfigError(field, f"{what} folder {str(folder)!r} does not exist (pass a "
                              "diffusers model folder, or a hub id such as org/name)")
        if not cfg_file.is_file():
            hint = (" It holds a whole pipeline (model_index.json): name the component's "
                    "folder with subfolder=, e.g. 'vae' or 'vqvae'."
                    if (folder / "model_index.json").is_file() else "")
            raise ConfigError(field, f"{what} folder {str(folder)!r} has no config.json; it "
                              "is not a diffusers model folder (see save_pretrained)." + hint)
    else:
        cfg_file = hub_file(model, "config.json", subfolder, what=what, field=field)
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(field, f"{what}: cannot read {str(cfg_file)!r}: {e}") from None


def load_diffusers_model(cls, model: str, subfolder: str | None = None, *, what: str,
                         field: str = "model"):
    """``cls.from_pretrained(model, subfolder=...)``, frozen and in eval mode, with clear errors.

    Args:
        cls: a diffusers model class (``AutoencoderKL``, ``VQModel``, ...).
        model: hub id or local folder.
        subfolder: folder inside it, or None.
        what: a noun for messages.
        field: the option named in errors.

    Raises:
        ConfigError: the weights cannot be loaded (a failed download gets the offline hint).
    """
    from importlib.util import find_spec

    kwargs: dict[str, Any] = {"subfolder": subfolder} if subfolder else {}
    # without accelerate diffusers falls back to this anyway, with a warning on every load
    kwargs["low_cpu_mem_usage"] = find_spec("accelerate") is not None
    local = is_local_path(model)
    if not local:
        before_hub_access()
    try:
        net = cls.from_pretrained(str(Path(model).expanduser()) if local else model, **kwargs)
    except Exception as e:
        if local:
            raise ConfigError(field, f"{what}: cannot load {model!r}: {first_line(e, 300)}") \
                from None
        raise ConfigError(field, offline_hint(what, model, subfolder, e)) from None
    return net.eval().requires_grad_(False)


def check_factor(generator: str, width: int, height: int, factor: int) -> None:
    """Raise ConfigError naming the nearest allowed size when a side is not a multiple of ``factor``.

    The registry checks a generator's fixed ``size_multiple`` up front; this checks the factor
    that only the model's config knows, before its weights load.

    Args:
        generator: the generator's registered name (for the message).
        width: image width in pixels.
        height: image height in pixels.
        factor: the multiple every side must be.
    """
    check_multiple(width, height, factor, f"generator {generator!r} with this model")
