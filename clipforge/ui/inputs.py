"""What the studio accepts from the page: its settings, their order and every check on them.

The page's values become a RunConfig through :func:`clipforge.config.merge` (the one way every
front end turns user values into settings), then the studio's own limits are applied (size,
steps, offered models, no server paths, bounded uploads), so everything a run could trip over
before its first step is refused *before* a job is queued (BAD_INPUTS rows 1-9). A refusal is an
:class:`InputError`: a :class:`~clipforge.errors.UsageError` whose ``field`` names the control.

Nothing here imports gradio. The functions take the :class:`~clipforge.ui.session.Studio` (any
object with ``max_side``, ``max_steps``, ``clip_choices`` and ``allow_pretrained``) for its limits.
"""

from __future__ import annotations

import math
import secrets
from contextlib import contextmanager
from typing import Any, Sequence

from clipforge.config import FIELDS, MIN_SIDE, RunConfig, field_defaults, merge
from clipforge.errors import ConfigError, UsageError
from clipforge.ui.uploads import check_image_size, check_no_server_paths, upload_path

# Settings the studio takes from the page, in the order of the generate endpoint's parameters.
# Everything but the UI-only ones (image_prompt_weight, batch_count, preview_every) is a
# RunConfig field; save_video records a frame every preview_every steps (save_every).
TEXT_FIELDS = ("prompt", "negative_prompt")
IMAGE_FIELDS = ("init_image", "init_weight", "image_prompts", "image_prompt_weight")
MODEL_FIELDS = ("clip", "generator", "generator_options")
MAIN_FIELDS = ("width", "height", "steps", "lr", "cutn", "seed", "batch_count", "preview_every",
               "save_video")
ADVANCED_FIELDS = ("optimizer", "schedule", "warmup_steps", "cut_pow", "augment", "tv_weight",
                   "range_weight", "keep_best")
UI_FIELDS = TEXT_FIELDS + MODEL_FIELDS + MAIN_FIELDS + IMAGE_FIELDS + ADVANCED_FIELDS
# RunConfig fields the page does not offer: the server operator picks the device and its
# arithmetic (the guide's recommended precision, else auto; compile is a long first step for a
# shared queue); the frame interval of a progress video is the preview interval.
NOT_IN_UI = ("device", "precision", "compile", "save_every")
# Settings a dropped clipforge PNG restores (the uploads and page-only settings are not in it).
PAGE_ONLY = ("image_prompt_weight", "batch_count", "preview_every")
RESTORABLE = tuple(n for n in UI_FIELDS
                   if n not in ("init_image", "image_prompts", *PAGE_ONLY))
# Numeric settings that must be given (a cleared number box arrives as None).
_NEEDED = ("generator", "init_weight", "width", "height", "steps", "lr", "cutn", "seed",
           "save_video", *ADVANCED_FIELDS)

# The studio refuses absurd prompt lengths before anything is tokenised (BAD_INPUTS rows 2, 32):
# CLIP reads ~77 tokens (a few hundred characters); 20,000 leave room for long prompt lists.
UI_MAX_PROMPT_CHARS = 20_000
MAX_PREVIEW_EVERY = 1000
MAX_BATCH_COUNT = 16  # images per Generate (their steps together stay within max_steps)
RANDOM_SEED_LIMIT = 2**53  # seeds drawn by the studio stay exact in the browser's numbers


class InputError(UsageError):
    """A setting from the page is unusable; ``field`` names the control, the message says why.

    Args:
        field_name: the control to mark (one of :data:`UI_FIELDS`).
        message: the whole message, shown as it is (it names the setting itself).
    """

    def __init__(self, field_name: str, message: str):
        super().__init__(message, field_name)


def random_seed() -> int:
    """A fresh seed in [0, 2**53), exactly representable in the browser."""
    return secrets.randbelow(RANDOM_SEED_LIMIT)


def ui_defaults(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Initial values of the page's controls: RunConfig's defaults, then ``overrides``.

    Args:
        overrides: control values to start with, e.g. ``{"width": 64}``; each is checked now
            (through :func:`clipforge.config.merge`), so a bad one fails at start-up.

    Raises:
        UsageError: an unknown setting or a value out of range, naming it.
    """
    d = field_defaults()
    d.update({"image_prompt_weight": 1.0, "batch_count": 1, "preview_every": 5})
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(d))
    if bad:
        raise ConfigError(bad[0], f"not a studio setting; settings: {', '.join(sorted(d))}")
    d.update(overrides)
    d.update(merge({k: v for k, v in overrides.items() if k in FIELDS}))  # checked, coerced
    _number("image_prompt_weight", d["image_prompt_weight"])
    _whole("preview_every", d["preview_every"], 1, MAX_PREVIEW_EVERY)
    _whole("batch_count", d["batch_count"], 1, MAX_BATCH_COUNT)
    return d


def config_from_values(studio, values: dict[str, Any]) -> tuple[RunConfig, int]:
    """Build the RunConfig (and the preview interval) from the page's values.

    Args:
        studio: supplies the limits (largest side, most steps, offered models).
        values: control name -> page value, for the names of :data:`UI_FIELDS`.

    Returns:
        the settings (a drawn seed in place of -1; the guide's recommended settings for what
        the page does not offer, see :meth:`RunConfig.from_settings`) and the preview interval
        in steps. A progress video keeps a frame every preview interval.

    Raises:
        InputError: naming the control and the allowed range (the batch count too).
    """
    from clipforge import registry
    from clipforge.guidance.prompts import prompts_from_config
    from clipforge.images import load_image

    _check_texts(values.get(n) for n in TEXT_FIELDS)
    weight = _number("image_prompt_weight", values.get("image_prompt_weight", 1.0))
    image_prompts = [p for p in map(upload_path, values.get("image_prompts") or []) if p]
    page: dict[str, Any] = {n: values.get(n) or "" for n in TEXT_FIELDS}
    page.update({  # the weight is always written, so a ':' in an uploaded name stays in the path
        "image_prompts": [f"{p}:{weight:g}" for p in image_prompts],
        "init_image": upload_path(values.get("init_image")), "clip": values.get("clip") or [],
        "generator_options": values.get("generator_options") or {}})
    for name in _NEEDED:
        if name in values and values[name] is None:
            raise InputError(name, f"{name}: a value is needed")
        if name in values:
            page[name] = values[name]
    _check_studio_limits(studio, values)
    every = _whole("preview_every", values.get("preview_every", 5), 1, MAX_PREVIEW_EVERY)
    with _on_control():
        given = merge(page)
        given["save_every"] = every if given.get("save_video") else 0  # the video's frames
        cfg = RunConfig.from_settings(given)
    if cfg.save_video:
        with _on_control("save_video"):
            from clipforge.frames import video_encoder

            video_encoder()
    check_clip(studio, cfg.clip)
    with _on_control():
        registry.check_generator(cfg.generator, cfg.width, cfg.height, cfg.generator_options,
                                 init_image=cfg.init_image is not None, steps=cfg.steps)
        check_no_server_paths(cfg.generator_options)
        prompts_from_config(cfg)
    files = [("init_image", cfg.init_image)] if cfg.init_image else []
    for field_name, path in files + [("image_prompts", p) for p in image_prompts]:
        with _on_control(field_name):
            check_image_size(field_name, path)
            load_image(path, field=field_name)
    if cfg.seed == -1:  # drawn here, so it is shown, saved and exact in the browser
        cfg = cfg.replace(seed=random_seed())
    batch_count(studio, values, cfg)
    return cfg, every


def batch_count(studio, values: dict[str, Any], cfg: RunConfig) -> int:
    """The number of images one Generate makes (seeds ``cfg.seed`` .. ``cfg.seed + n - 1``).

    Args:
        studio: supplies ``max_steps``, which bounds the steps of the whole batch (one job
            holds the model for all of them).
        values: the page's values (``batch_count``: 1 when absent).
        cfg: the first image's settings (a concrete seed).

    Raises:
        InputError: (control ``batch_count``, or ``seed`` when the last seed would overflow).
    """
    from clipforge.config import MAX_SEED

    n = _whole("batch_count", values.get("batch_count", 1), 1, MAX_BATCH_COUNT)
    if n * cfg.steps > studio.max_steps:
        raise InputError("batch_count", f"batch_count: {n} images of {cfg.steps} steps are "
                         f"{n * cfg.steps} steps; this studio allows {studio.max_steps} per "
                         "Generate")
    if cfg.seed + n - 1 > MAX_SEED:
        raise InputError("seed", f"seed: {cfg.seed} + {n - 1} is more than {MAX_SEED}")
    return n


def check_steering(base: RunConfig, prompt: Any, negative_prompt: Any, lr: Any,
                   preview_every: Any) -> int:
    """Check the steering of a paused run (new prompts, weights, learning rate) before it is
    queued; returns the preview interval.

    Args:
        base: the paused run's current settings.
        prompt, negative_prompt: the new prompts (same syntax as on Generate).
        lr: the new learning rate.
        preview_every: send a preview every this many steps.

    Raises:
        InputError: naming the control and the allowed range.
    """
    from clipforge.guidance.prompts import prompts_from_config

    _check_texts((prompt, negative_prompt))
    with _on_control():
        steered = merge({"prompt": prompt or "", "negative_prompt": negative_prompt or "",
                         "lr": _number("lr", lr)})
        prompts_from_config(base.replace(**steered))
    return _whole("preview_every", preview_every, 1, MAX_PREVIEW_EVERY)


def check_clip(studio, specs: Sequence[str]) -> None:
    """Accept offered models (``@weight`` allowed) and, where allowed, open_clip ``ARCH:TAG``.

    Args:
        studio: the offered models (``clip_choices``) and ``allow_pretrained``.
        specs: the CLIP specs asked for.

    Raises:
        InputError: (control ``clip``) a name this studio does not offer, e.g. a server path.
    """
    from clipforge.guidance.embedders import split_weight

    for spec in specs:
        name, _ = split_weight(spec)
        if name in studio.clip_choices:
            continue
        if studio.allow_pretrained and _is_pretrained_name(name):
            continue
        raise InputError("clip", f"clip: {name!r} is not offered by this studio; choose one "
                         f"of {', '.join(studio.clip_choices) or 'none'}"
                         + (" or an open_clip ARCH:TAG such as ViT-B-32:laion2b_s34b_b79k"
                            if studio.allow_pretrained else ""))


@contextmanager
def _on_control(field_name: str | None = None):
    """Re-raise a UsageError from the block as an InputError on its control (or ``field_name``)."""
    try:
        yield
    except InputError:
        raise
    except UsageError as e:
        name = field_name or ("width" if e.field == "size" else (e.field or "prompt").split()[0])
        raise InputError(name if name in UI_FIELDS else "prompt", str(e)) from None


def _is_pretrained_name(name: str) -> bool:
    arch, sep, tag = name.partition(":")
    if not sep or "/" in tag or "\\" in tag:
        return False
    import open_clip

    return (arch, tag) in set(open_clip.list_pretrained())


def studio_limits(studio) -> dict[str, tuple[int, int]]:
    """The ranges this studio allows (tighter than RunConfig's): setting -> (lowest, highest)."""
    return {"width": (MIN_SIDE, studio.max_side), "height": (MIN_SIDE, studio.max_side),
            "steps": (0, studio.max_steps), "cutn": (1, studio.max_cutn)}


def _check_studio_limits(studio, values: dict[str, Any]) -> None:
    """Above the studio's limit -> its message (before merge, which would quote the engine's)."""
    for name, (lo, hi) in studio_limits(studio).items():
        try:
            x = float(values[name])
        except (KeyError, TypeError, ValueError):
            continue  # missing or not a number: merge names the problem
        if math.isfinite(x) and x > hi:
            raise InputError(name, f"{name}: {values[name]} is more than this studio allows; "
                             f"allowed: {lo}..{hi}")


def _check_texts(texts) -> None:
    """Prompts are text of a bounded length (the rest of the text checks are merge's)."""
    for name, text in zip(TEXT_FIELDS, texts):
        if text is not None and not isinstance(text, str):
            raise InputError(name, f"{name}: expected text")
        if text and len(text) > UI_MAX_PROMPT_CHARS:
            raise InputError(name, f"{name}: {len(text):,} characters; the studio accepts "
                             f"at most {UI_MAX_PROMPT_CHARS:,} (CLIP reads ~77 tokens)")


def _number(name: str, value: Any) -> float:
    """A finite number from the page, or an InputError naming ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(name, f"{name}: must be finite, got {value!r}")
    return x


def _whole(name: str, value: Any, lo: int, hi: int) -> int:
    """A whole number in lo..hi from the page, or an InputError naming ``name``."""
    x = _number(name, value)
    if not x.is_integer() or not (lo <= x <= hi):
        raise InputError(name, f"{name}: {value!r} is not allowed; allowed: whole numbers "
                         f"{lo}..{hi}")
    return int(x)
