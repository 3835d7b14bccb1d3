"""RunConfig: every setting of one run, validated in one place.

The CLI flags and the UI controls are derived from the fields below (their ``help`` metadata
and defaults), so a default exists exactly once. A PNG written by clipforge carries its
RunConfig as versioned JSON; :func:`RunConfig.from_dict` reads it back.

Validation follows ``BAD_INPUTS.md``: every bad value raises :class:`ConfigError` (a
``ValueError``) naming the field and the allowed range, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

CONFIG_VERSION = 1

# Limits, stated once and quoted in error messages.
MIN_SIDE, MAX_SIDE = 8, 4096
MAX_PIXELS = 4096 * 4096
MAX_STEPS = 100_000
MAX_CUTN = 256
MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 1_000_000  # longer input is refused outright; CLIP reads ~77 tokens anyway
METADATA_PROMPT_CHARS = 8_192  # the capped copy kept in PNG metadata and manifests
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")


class ConfigError(ValueError):
    """A setting is out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its help text (for the CLI and the UI)."""
    meta = {"help": help, **extra}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
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
    # pixel, not fourier: with the bundled guide and judge (128 px, 150 steps, 32 cutouts) the
    # judge agreed on 3 of 4 prompts for the pixel pyramid and 2 of 4 for fourier
    # (tests/test_steering.py); defaults follow the held-out judge, never the guide's own score.
    generator: str = _opt("pixel", "Generator name (see `clipforge models`).")
    generator_options: dict = _opt({}, "Generator-specific options, e.g. {\"decay\": 1.0}.")
    clip: tuple[str, ...] = _opt(("shapes",), "CLIP model(s) that guide: `shapes`, "
                                 "`ViT-B-32:laion2b_s34b_b79k`, `NAME:/path/weights`, a folder; "
                                 "append `@W` to weight one model of an ensemble.")
    width: int = _opt(256, "Image width in pixels.", min=MIN_SIDE, max=MAX_SIDE)
    height: int = _opt(256, "Image height in pixels.", min=MIN_SIDE, max=MAX_SIDE)
    steps: int = _opt(200, "Optimization steps (0 returns the initial image).", min=0,
                      max=MAX_STEPS)
    lr: float = _opt(0.05, "Learning rate.", min_exclusive=0.0, max=1e9)
    optimizer: str = _opt("adam", "Optimizer.", choices=OPTIMIZERS)
    schedule: str = _opt("constant", "Learning-rate decay after warm-up.", choices=SCHEDULES)
    warmup_steps: int = _opt(0, "Linear learning-rate warm-up steps.", min=0, max=MAX_STEPS)

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
    save_every: int = _opt(0, "Keep a progress frame every K steps (0 = off).", min=0,
                           max=MAX_STEPS)

    def __post_init__(self) -> None:
        validate(self)

    # ---- construction helpers ----
    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return d

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
        if "clipforge_config" in data:  # the versioned wrapper written by to_json
            version = data["clipforge_config"]
            if not isinstance(version, int) or version > CONFIG_VERSION:
                raise ConfigError("clipforge_config", f"unsupported config version {version!r} "
                                  f"(this clipforge reads versions up to {CONFIG_VERSION})")
            data = data["config"]
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting; known settings: {', '.join(known)}")
        kwargs = {k: _coerce(known[k], v) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", "JSON must be an object")
        return cls.from_dict(data)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"256"`` (square) or ``"320x256"`` (width x height) into (width, height)."""
    s = str(text).strip().lower()
    parts = s.split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ConfigError("size", f"expected N or WxH with whole numbers, got {text!r}")
    w = int(parts[0])
    h = int(parts[-1])
    return w, h


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn JSON/CSV-ish values into the field's type without silently rounding."""
    name, default = f.name, (f.default if f.default is not dataclasses.MISSING
                             else f.default_factory())  # type: ignore[misc]
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ConfigError(name, f"expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(name, f"expected a whole number, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(name, f"expected a whole number, got {value!r}") from None
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(name, f"expected a number, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(p for p in (s.strip() for s in value.split(",")) if p) if value else ()
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ConfigError(name, f"expected a list, got {value!r}")
    if isinstance(default, dict) and isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ConfigError(name, f"expected a JSON object, got {value!r}") from None
    return value


def check_text(name: str, text: str) -> None:
    """Reject text that cannot be stored or tokenised safely (NUL, lone surrogates, absurd size)."""
    if not isinstance(text, str):
        raise ConfigError(name, f"expected text, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise ConfigError(name, f"is {len(text):,} characters; the maximum is {MAX_PROMPT_CHARS:,}")
    if "\x00" in text:
        raise ConfigError(name, "contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(name, "contains a lone surrogate (not valid Unicode text)") from None


def _check_number(cfg: RunConfig, f: dataclasses.Field) -> None:
    name, value, meta = f.name, getattr(cfg, f.name), f.metadata
    is_int = isinstance(f.default, int) and not isinstance(f.default, bool)
    if is_int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected a whole number, got {value!r}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value!r}")
    lo, hi = meta.get("min", meta.get("min_exclusive")), meta.get("max")
    rng = (f"{'>' if 'min_exclusive' in meta else '>='} {lo}" if lo is not None else "") + \
        (f" and <= {hi:g}" if hi is not None else "")
    if ("min" in meta and value < meta["min"]) or \
       ("min_exclusive" in meta and value <= meta["min_exclusive"]) or \
       (hi is not None and value > hi):
        raise ConfigError(name, f"{value!r} is out of range; allowed: {rng.strip()}")


def validate(cfg: RunConfig) -> None:
    """Check every field; raise ConfigError naming the first bad one."""
    for f in fields(cfg):
        if "min" in f.metadata or "min_exclusive" in f.metadata or "max" in f.metadata:
            _check_number(cfg, f)
        if "choices" in f.metadata and getattr(cfg, f.name) not in f.metadata["choices"]:
            raise ConfigError(f.name, f"{getattr(cfg, f.name)!r} is not one of "
                              f"{', '.join(f.metadata['choices'])}")
    if not isinstance(cfg.augment, bool):
        raise ConfigError("augment", f"expected true or false, got {cfg.augment!r}")
    check_text("prompt", cfg.prompt)
    check_text("negative_prompt", cfg.negative_prompt)
    for name in ("image_prompts", "clip"):
        value = getattr(cfg, name)
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(name, f"expected a list of non-empty strings, got {value!r}")
        for v in value:
            check_text(name, v)
    if not cfg.clip:
        raise ConfigError("clip", "at least one CLIP model is needed")
    if cfg.init_image is not None and (not isinstance(cfg.init_image, str) or not cfg.init_image):
        raise ConfigError("init_image", f"expected a file path, got {cfg.init_image!r}")
    if not isinstance(cfg.generator, str) or not cfg.generator:
        raise ConfigError("generator", f"expected a generator name, got {cfg.generator!r}")
    if not isinstance(cfg.generator_options, dict):
        raise ConfigError("generator_options", f"expected a mapping, got {cfg.generator_options!r}")
    if cfg.width * cfg.height > MAX_PIXELS:
        raise ConfigError("size", f"{cfg.width}x{cfg.height} has more than {MAX_PIXELS:,} pixels")
    if not isinstance(cfg.device, str) or not _valid_device(cfg.device):
        raise ConfigError("device", f"{cfg.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if not cfg.prompt.strip() and not cfg.image_prompts:
        raise ConfigError("prompt", "prompt is empty (give a text prompt or an image prompt)")
    if len(cfg.prompt) > METADATA_PROMPT_CHARS:
        warnings.warn(f"prompt is {len(cfg.prompt):,} characters; CLIP reads only its first ~77 "
                      "tokens and saved metadata keeps the first "
                      f"{METADATA_PROMPT_CHARS:,} characters", stacklevel=3)


def _valid_device(d: str) -> bool:
    if d in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, idx = d.partition(":")
    return head == "cuda" and idx.isdigit()


def field_help() -> dict[str, str]:
    """Help text of every field, for the CLI and UI."""
    return {f.name: f.metadata.get("help", "") for f in fields(RunConfig)}


def field_defaults() -> dict[str, Any]:
    """Default of every field (RunConfig() itself needs a prompt)."""
    return {
        f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for f in fields(RunConfig)
    }
