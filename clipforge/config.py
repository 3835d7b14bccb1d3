"""RunConfig: every setting of one run, validated in one place; merge() and load_settings().

The CLI flags and the studio's controls are derived from the fields below (their ``help``
metadata and defaults), so a default exists exactly once. A PNG written by clipforge carries
its RunConfig as versioned JSON; :meth:`RunConfig.from_dict` reads it back.

Every front end turns user values into settings the same way: :func:`merge` layers partial
settings (a PNG's config, a ``--config`` file, a list row, flags, the studio's controls),
coercing and checking each given field at once, and ``RunConfig.from_dict(merge(...))`` makes
the run's config. A bad value raises :class:`~clipforge.errors.ConfigError` (a ``UsageError``)
naming the field and the allowed range, before any model is loaded (BAD_INPUTS.md).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from clipforge.errors import ConfigError
from clipforge.fields import (MAX_PROMPT_CHARS, FrozenDict, check_field, check_text, coerce,
                              default_of, is_blank, parse_json_object, parse_size)

CONFIG_VERSION = 1

# Limits, stated once and quoted in error messages.
MIN_SIDE, MAX_SIDE = 8, 4096
MAX_PIXELS = 4096 * 4096
MAX_STEPS = 100_000
MAX_CUTN = 256
MAX_SEED = 2**63 - 1
METADATA_PROMPT_CHARS = 8_192  # the capped copy kept in PNG metadata and manifests
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("auto", "fp32", "bf16")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its help text and allowed range (for the CLI and the UI)."""
    meta = {"help": help, **extra}
    if isinstance(default, dict):
        return field(default_factory=FrozenDict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """All settings of one guided-generation run (frozen; use :meth:`replace` to vary)."""

    # --- what to make ---
    prompt: str = _opt("", "Text prompt. `|` separates parts, a trailing `:w` weights a part "
                           "(`a lighthouse:1.5 | fog:-0.5`); `\\|`, `\\:` and `\\\\` escape.")
    negative_prompt: str = _opt("", "Prompt to steer away from (same syntax; weights are negated).")
    image_prompts: tuple[str, ...] = _opt((), "Image files to steer toward, each `PATH` or "
                                              "`PATH:WEIGHT`.")
    init_image: str | None = _opt(None, "Image to start from (the generator encodes it).")
    init_weight: float = _opt(0.0, "Weight of the MSE loss that keeps the image near the init "
                                   "image (0 = off).", min=0.0, max=1e4)

    # --- how to make it ---
    # pixel, not fourier: over the steering grid (benchmarks/steering.py, docs/generators.md)
    # judge and checker both read 7 of 32 pixel images as asked, 3 fourier ones; defaults follow
    # the held-out judge and the checker, never the guide's own score.
    generator: str = _opt("pixel", "Generator name (see `clipforge models`).")
    generator_options: dict = _opt({}, "Generator-specific options, e.g. {\"decay\": 1.0}.")
    clip: tuple[str, ...] = _opt(("shapes",), "CLIP model(s) that guide: `shapes`, "
                                 "`ViT-B-32:laion2b_s34b_b79k`, `NAME:/path/weights`, a folder; "
                                 "append `@W` to weight one model of an ensemble.",
                                 split_commas=True)
    width: int = _opt(256, "Image width in pixels.", min=MIN_SIDE, max=MAX_SIDE)
    height: int = _opt(256, "Image height in pixels.", min=MIN_SIDE, max=MAX_SIDE)
    steps: int = _opt(200, "Optimization steps (0 returns the initial image).", min=0,
                      max=MAX_STEPS)
    lr: float = _opt(0.05, "Learning rate.", min_exclusive=0.0, max=1e9)
    optimizer: str = _opt("adam", "Optimizer.", choices=OPTIMIZERS)
    schedule: str = _opt("constant", "Learning-rate decay after warm-up.", choices=SCHEDULES)
    warmup_steps: int = _opt(0, "Linear learning-rate warm-up steps.", min=0, max=MAX_STEPS)
    keep_best: bool = _opt(False, "Keep the iterate the guide scored best (lowest loss) as the "
                                  "result instead of the last (optimized generators).")

    # --- guidance ---
    cutn: int = _opt(32, "Cutouts scored per step.", min=1, max=MAX_CUTN)
    cut_pow: float = _opt(1.0, "Cutout size exponent (>1 favours small cutouts).",
                          min_exclusive=0.0, max=10.0)
    augment: bool = _opt(True, "Flip, jitter and colour-noise the cutouts.")
    tv_weight: float = _opt(0.05, "Total-variation regularizer weight.", min=0.0, max=1e4)
    range_weight: float = _opt(0.0, "Weight of the loss that keeps pixels in [0, 1] before "
                                    "clamping.", min=0.0, max=1e4)

    # --- reproducibility and placement ---
    seed: int = _opt(0, "Random seed; -1 draws one (it is reported and saved).", min=-1,
                     max=MAX_SEED)
    device: str = _opt("auto", "`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:N`.")
    precision: str = _opt("auto", "Arithmetic of the CLIP forward and backward: `auto` (bf16 on "
                                  "CUDA and on CPUs with AMX or AVX512-BF16, else fp32), `fp32`, "
                                  "`bf16`. The PNG records the one used.", choices=PRECISIONS)
    compile: bool = _opt(False, "torch.compile the CLIP image towers (a slower first step; "
                                "pays on long runs).")
    save_every: int = _opt(0, "Keep a progress frame every K steps (0 = off) and write them "
                              "beside the PNG as a GIF.", min=0, max=MAX_STEPS)
    save_video: bool = _opt(False, "With save_every: also write the frames as an MP4 (H.264; "
                                   "pip install 'clipforge[video]').")

    def __post_init__(self) -> None:
        if isinstance(self.generator_options, dict) and \
                not isinstance(self.generator_options, FrozenDict):
            object.__setattr__(self, "generator_options", FrozenDict(self.generator_options))
        for name in ("clip", "image_prompts"):  # any sequence of strings, stored as a tuple
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, (str, bytes, tuple)):
                object.__setattr__(self, name, tuple(value))
        validate(self)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
                for k, v in values}

    def to_json(self, *, cap_prompts: bool = False) -> str:
        """Versioned JSON; ``cap_prompts`` keeps at most METADATA_PROMPT_CHARS of each prompt."""
        d = self.to_dict()
        if cap_prompts:
            for k in ("prompt", "negative_prompt"):
                d[k] = d[k][:METADATA_PROMPT_CHARS]
        return json.dumps({"clipforge_config": CONFIG_VERSION, "config": d},
                          ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Build from a dict (JSON, a CSV row, UI values); unknown keys and bad types are errors."""
        return cls(**merge(data))

    @classmethod
    def from_settings(cls, *layers: Mapping[str, Any] | "RunConfig" | None) -> "RunConfig":
        """What a user gave: RunConfig's defaults, the recommended settings of the guide and
        generator (:func:`clipforge.pretrained.recommended`: the bundled ``shapes`` guide's
        measured size, steps...; a real ViT-B-32 has none), then the layers (:func:`merge`)."""
        from clipforge.pretrained import recommended

        given = merge(*layers)
        clip = given.get("clip", default_of(FIELDS["clip"]))
        generator = given.get("generator", default_of(FIELDS["generator"]))
        return cls(**merge(recommended(clip, generator), *layers))  # a whole layer stays whole

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        """Build from JSON text (plain settings or the versioned wrapper of :meth:`to_json`)."""
        return cls.from_dict(parse_json_object(text, "config"))

    @classmethod
    def from_png(cls, path: str | Path) -> "RunConfig":
        """The run a PNG carries: clipforge's own settings, else what its A1111 ``parameters``
        give (prompts, steps, seed, size; see :func:`clipforge.pngtext.a1111_settings`)."""
        from clipforge.pngtext import png_settings

        return cls.from_settings(png_settings(path)[0])

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


# ---------------------------------------------------------------------------------------------
# settings: partial, layered, checked field by field

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(RunConfig)}


def unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The settings inside the versioned wrapper ``{"clipforge_config": 1, "config": {...}}``."""
    if "clipforge_config" not in data:
        return data
    version = data["clipforge_config"]
    if isinstance(version, bool) or not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError("clipforge_config", f"unsupported config version {version!r} "
                          f"(this clipforge reads versions up to {CONFIG_VERSION})")
    inner = data.get("config")
    if not isinstance(inner, Mapping):
        raise ConfigError("config", f"expected an object of settings, got {inner!r:.60}")
    return inner


def merge(*layers: Mapping[str, Any] | RunConfig | None) -> dict[str, Any]:
    """Layer partial settings, later ones winning, into one dict of checked field values.

    Each layer is a RunConfig, a mapping of settings (JSON, a CSV row, flags, the studio's
    values; the versioned wrapper is unwrapped) or None. A value of None means "not given".
    ``size`` ("256" or "320x256") stands for width and height. Every given value is coerced
    to its field's type and checked now; the cross-field rules (an empty prompt, too many
    pixels) are checked when the RunConfig is built.

    ``generator_options`` layer option by option (``{"init_std": 0.5}`` over a recommended
    ``{"model": "shapes-vae"}`` keeps the model), except that a whole config (a RunConfig, the
    versioned wrapper of a PNG or checkpoint) replaces them: a saved run repeats exactly.

    Raises:
        ConfigError: an unknown setting or a bad value, naming the field.
    """
    out: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        whole = isinstance(layer, RunConfig)
        if whole:
            layer = layer.to_dict()
        if not isinstance(layer, Mapping):
            raise ConfigError("config", f"expected an object of settings, got {layer!r:.60}")
        whole = whole or "clipforge_config" in layer  # the wrapper of a saved run
        for key, value in unwrap(layer).items():
            if value is None:
                continue
            if key == "size":
                out["width"], out["height"] = parse_size(value)
                continue
            f = FIELDS.get(key)
            if f is None:
                raise ConfigError(str(key), f"unknown setting; known settings: "
                                  f"{', '.join(FIELDS)}")
            value = coerce(f, value)
            check_field(f, value)
            if key == "generator_options" and not whole and key in out:
                value = {**out[key], **value}
            out[key] = value
    return out


def load_settings(path: str | Path) -> dict[str, Any]:
    """Partial settings from a ``.toml`` or ``.json`` file (the versioned wrapper allowed).

    Raises:
        ConfigError: (field ``config``) unreadable, unparsable or not an object of settings.
    """
    import tomllib

    p = Path(path)
    if not p.is_file():  # a folder, /dev/zero, a FIFO (reading one would block)
        raise ConfigError("config", f"cannot read {str(p)!r}: not a regular file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("config", f"cannot read {str(p)!r}: {e.strerror}") from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        data = parse_json_object(raw, "config")
    elif suffix == ".toml":
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
            raise ConfigError("config", f"{p.name!r} cannot be parsed: {e}") from None
    else:
        raise ConfigError("config", f"{p.name!r}: expected a .toml or .json file of settings")
    return merge(data)


def validate(cfg: RunConfig) -> None:
    """Check every field, then the rules between fields; raise ConfigError naming the first."""
    for f in fields(cfg):
        check_field(f, getattr(cfg, f.name))
    if not cfg.clip:
        raise ConfigError("clip", "at least one CLIP model is needed")
    if not cfg.generator:
        raise ConfigError("generator", f"expected a generator name, got {cfg.generator!r}")
    if cfg.width * cfg.height > MAX_PIXELS:
        raise ConfigError("size", f"{cfg.width}x{cfg.height} has more than {MAX_PIXELS:,} pixels")
    if not _valid_device(cfg.device):
        raise ConfigError("device", f"{cfg.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.save_video and not cfg.save_every:
        raise ConfigError("save_video", "needs save_every K > 0 (the frames it shows)")
    if is_blank(cfg.prompt) and not cfg.image_prompts:
        raise ConfigError("prompt", "prompt is empty (give a text prompt or an image prompt)")
    if len(cfg.prompt) > METADATA_PROMPT_CHARS:
        warnings.warn(f"prompt is {len(cfg.prompt):,} characters; CLIP reads only its first ~77 "
                      "tokens and saved metadata keeps the first "
                      f"{METADATA_PROMPT_CHARS:,} characters", stacklevel=3)


def _valid_device(d: str) -> bool:
    return d in ("auto", "cpu", "cuda", "mps") or (d[:5] == "cuda:" and d[5:].isdigit())


def field_help() -> dict[str, str]:
    """Help text of every field, for the CLI and UI."""
    return {name: f.metadata.get("help", "") for name, f in FIELDS.items()}


def field_defaults() -> dict[str, Any]:
    """Default of every field (RunConfig() itself needs a prompt)."""
    return {name: default_of(f) for name, f in FIELDS.items()}


__all__ = ["RunConfig", "ConfigError", "merge", "load_settings", "parse_size", "check_text",
           "field_help", "field_defaults", "FrozenDict", "CONFIG_VERSION", "MAX_PROMPT_CHARS"]
