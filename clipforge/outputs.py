"""Writing results: PNGs that carry their own settings, atomic writes, safe names.

A clipforge PNG holds two text chunks:

- ``clipforge``: the full RunConfig as versioned JSON (``read_config`` reads it back and
  ``clipforge generate --from image.png`` repeats the run);
- ``parameters``: the A1111-style summary other tools show
  (``prompt\\nNegative prompt: ...\\nSteps: 200, Seed: 1, Size: 256x256, Model: shapes, ...``).

Every file is written to a temporary name in the same folder, flushed and ``os.replace``-d
into place, so a crash or a full disk never leaves a half-written file under a final name;
a folder (a converted model) the same way with :func:`atomic_dir`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterator

from clipforge.config import METADATA_PROMPT_CHARS, ConfigError, RunConfig
from clipforge.pngtext import format_parameters, parse_parameters, read_png_text  # noqa: F401

TMP_SUFFIX = ".clipforge-tmp"
MAX_NAME_BYTES = 200  # well under the usual 255-byte limit, leaving room for suffixes


# ---------------------------------------------------------------------------------------------
# names and paths


def slugify(text: str, max_len: int = 60) -> str:
    """An ASCII file-name fragment: letters, digits and dashes only; never empty, no ``..``."""
    norm = unicodedata.normalize("NFKD", text)
    ascii_text = norm.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:max_len].strip("-")
    return slug or "image"


def safe_join(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refusing names that would leave ``folder`` (``..``, ``/``, absolute)."""
    base = Path(folder).resolve()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ConfigError("out", f"unsafe file name {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError("out", f"file name longer than {MAX_NAME_BYTES} bytes")
    path = (base / name).resolve()
    if path.parent != base:
        raise ConfigError("out", f"{name!r} would be written outside {str(base)!r}")
    return path


# ---------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name[:80]}.", suffix=TMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are for sharing
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it is renamed to ``path``.

    The folder's files are flushed to disk before the rename, so ``path`` appears whole or not
    at all. On any error the temporary folder is removed and ``path`` is left as it was.

    Args:
        path: the folder to create.
        replace: an existing folder at ``path`` is swapped out (moved aside, then removed)
            once the new one is complete; otherwise it is refused.

    Raises:
        FileExistsError: ``path`` exists already and ``replace`` is off (a non-empty folder
            that appears there meanwhile makes the rename fail instead).
    """
    final = Path(path)
    if final.exists() and not replace:
        raise FileExistsError(f"{str(final)!r} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:80]}.", suffix=TMP_SUFFIX,
                                dir=final.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are for sharing
        old = final.with_name(f".{final.name[:80]}.old{TMP_SUFFIX}")
        if replace and final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sweep_temp_files(folder: str | os.PathLike) -> int:
    """Delete temporary files a killed writer left in ``folder``; returns how many."""
    n = 0
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# PNG metadata


# what a diffusion run uses when its options do not say (guarded by a test against the
# DiffusionSampler's signature: outputs may not import the generator)
DIFFUSION_DEFAULTS = {"model": "shapes-ddpm", "scheduler": "ddim", "guidance_scale": 1.0,
                      "cfg_scale": 7.5}


def a1111_fields(cfg: RunConfig) -> dict[str, str]:
    """The ``Key: value`` fields of a run's A1111 text, with values true to the run.

    A1111 readers show ``Sampler``, ``CFG scale`` and ``Model``. For an optimizer run the
    sampler is the optimizer (``Schedule type`` its learning-rate schedule), the model is the
    guiding CLIP and there is no CFG scale. For a diffusion run they are the scheduler, the
    diffusion model (the CLIP is ``CLIP model``) and, when the run sets a Stable Diffusion
    text (``text`` / ``cfg_scale`` options), its classifier-free guidance scale; no learning
    rate.
    """
    f = {"Steps": cfg.steps}
    clip = " + ".join(cfg.clip)
    if cfg.generator == "diffusion":
        o = {**DIFFUSION_DEFAULTS, **cfg.generator_options}
        f["Sampler"] = o["scheduler"]
        if "text" in cfg.generator_options or "cfg_scale" in cfg.generator_options:
            f["CFG scale"] = f"{float(o['cfg_scale']):g}"
        f.update({"Seed": cfg.seed, "Size": f"{cfg.width}x{cfg.height}", "Model": o["model"], "CLIP model": clip,
                  "CLIP guidance scale": f"{float(o['guidance_scale']):g}"})
    else:
        f.update({"Sampler": cfg.optimizer, "Schedule type": cfg.schedule, "Seed": cfg.seed,
                  "Size": f"{cfg.width}x{cfg.height}", "Model": clip,
                  "Learning rate": f"{cfg.lr:g}"})
    f.update({"Generator": cfg.generator, "Cutouts": cfg.cutn, "Software": "clipforge"})
    return {k: str(v) for k, v in f.items()}


def a1111_parameters(cfg: RunConfig, options: dict | None = None) -> str:
    """The A1111-style ``parameters`` text of a run (prompts capped for metadata).

    Args:
        cfg: the run's settings.
        options: the generator's effective options (its defaults with the given ones applied,
            :meth:`clipforge.runner.Run.generator_settings`); default: the given ones only.
    """
    fields = a1111_fields(cfg)
    options = dict(cfg.generator_options) if options is None else options
    if options:  # the model, sampler steps, prior weight, ... the generator ran with
        software = fields.pop("Software")
        fields["Generator options"] = json.dumps(options, ensure_ascii=False, sort_keys=True,
                                                 default=str)
        fields["Software"] = software
    return format_parameters(cfg.prompt[:METADATA_PROMPT_CHARS],
                             cfg.negative_prompt[:METADATA_PROMPT_CHARS], fields)


def png_bytes(image, cfg: RunConfig | None = None, extra: dict[str, str] | None = None,
              options: dict | None = None) -> bytes:
    """Encode an image tensor (1, 3, H, W) or (3, H, W) in [0, 1] as PNG with metadata
    (``options``: the generator's effective options, see :func:`a1111_parameters`)."""
    from PIL.PngImagePlugin import PngInfo

    from clipforge.images import to_pil

    info = PngInfo()
    if cfg is not None:
        info.add_itxt("clipforge", cfg.to_json(cap_prompts=True))
        info.add_itxt("parameters", a1111_parameters(cfg, options))
    for k, v in (extra or {}).items():
        info.add_itxt(k, v)
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: str | os.PathLike, image, cfg: RunConfig | None = None,
             extra: dict[str, str] | None = None, options: dict | None = None) -> Path:
    """Write ``image`` as a PNG carrying ``cfg`` (and the generator's effective ``options``),
    atomically (temp file + ``os.replace``).

    Shape:
        image: (1, 3, H, W) or (3, H, W), float in [0, 1].
    """
    return atomic_write_bytes(path, png_bytes(image, cfg, extra, options))


def read_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig a clipforge PNG carries (raises ConfigError when it has none)."""
    text = read_png_text(path).get("clipforge")
    if text is None:
        raise ConfigError("from", f"{str(path)!r} carries no clipforge settings")
    return RunConfig.from_json(text)


def default_name(cfg: RunConfig, index: int | None = None) -> str:
    """``0007-a-red-circle-s42.png``-style name: ASCII, short, no path parts."""
    head = f"{index:04d}-" if index is not None else ""
    return f"{head}{slugify(cfg.prompt or 'image')}-s{cfg.seed}.png"

