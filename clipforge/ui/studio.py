"""The studio's engine room: input checking, per-session state and a pausable, steerable run.

Nothing here imports gradio, so the logic is testable (and reusable by other front ends)
without it; ``clipforge/ui/app.py`` wires it to Gradio components.

- :class:`Studio` is one per server: the shared :class:`~clipforge.guidance.embedders.ModelCache`
  (models are loaded once for every session), the device, the limits of a shared GPU and one
  lock around every step, so only one run touches the model at a time.
- :class:`Session` is one per browser tab (a ``gr.State`` deep-copies a fresh one), so settings
  and results never leak between users.
- :class:`LiveRun` wraps a :class:`~clipforge.loop.Run`: it can stop at any step, be steered
  (prompts, weights, learning rate) and continue with the optimizer state intact (a Run
  iterated again goes on from ``run.done`` with ``run.opt``, through
  :func:`clipforge.loop.optimize`'s ``opt=`` / ``start=``).
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import uuid
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from clipforge.config import MAX_STEPS, MIN_SIDE, ConfigError, RunConfig, field_defaults

# Settings the studio takes from the page, in the order of the generate endpoint's parameters.
# Everything but the UI-only ones (image_prompt_weight, preview_every) is a RunConfig field.
TEXT_FIELDS = ("prompt", "negative_prompt")
IMAGE_FIELDS = ("init_image", "init_weight", "image_prompts", "image_prompt_weight")
MODEL_FIELDS = ("clip", "generator", "generator_options")
MAIN_FIELDS = ("width", "height", "steps", "lr", "cutn", "seed", "preview_every")
ADVANCED_FIELDS = ("optimizer", "schedule", "warmup_steps", "cut_pow", "augment", "tv_weight",
                   "range_weight")
UI_FIELDS = TEXT_FIELDS + MODEL_FIELDS + MAIN_FIELDS + IMAGE_FIELDS + ADVANCED_FIELDS
# RunConfig fields the page does not offer: the server operator picks the device, and progress
# frames are a CLI feature.
NOT_IN_UI = ("device", "save_every")

# The page refuses absurd prompt lengths before anything is tokenised (BAD_INPUTS row 2): a
# 100 kB prompt is accepted (and truncated by the model, with a warning); 10 MB is not.
UI_MAX_PROMPT_CHARS = 200_000
MAX_PREVIEW_EVERY = 1000
MAX_RESULTS_PER_SESSION = 64
UI_MAX_IMAGE_PIXELS = 4096 * 4096  # uploads are decoded while checking; keep that bounded
RANDOM_SEED_LIMIT = 2**53  # seeds drawn by the studio stay exact in the browser's numbers


class InputError(ValueError):
    """A setting from the page is unusable; ``field`` names the control, the message says why."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def random_seed() -> int:
    """A fresh seed in [0, 2**53), exactly representable in the browser."""
    return secrets.randbelow(RANDOM_SEED_LIMIT)


def ui_defaults(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Initial values of the page's controls: RunConfig's defaults, then ``overrides``.

    The overrides are checked by building a RunConfig, so a bad one fails at start-up.
    """
    d = field_defaults()
    d.update({"image_prompt_weight": 1.0, "preview_every": 5})
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(d))
    if bad:
        raise ConfigError(bad[0], f"not a studio setting; settings: {', '.join(sorted(d))}")
    d.update(overrides)
    RunConfig.from_dict({k: v for k, v in d.items() if k in _CONFIG_FIELDS
                         and k not in ("prompt", "negative_prompt")} | {"prompt": "check"})
    return d


_CONFIG_FIELDS = {f.name for f in fields(RunConfig)}


class Studio:
    """Server-wide state shared by every session: models, device, limits, the step lock.

    Args:
        default_clip: CLIP spec(s) selected at start (``"shapes"`` is the bundled model).
        clip_choices: CLIP specs offered in the model list; only these (with an optional
            ``@weight``) and open_clip's ``ARCH:TAG`` pretrained names are accepted from the
            page, so page input never names a file on the server.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        max_side: largest width or height the page may ask for.
        max_steps: most steps one run may take.
        output_dir: where result PNGs are written (a fresh temporary folder by default).
        allow_pretrained: accept open_clip ``ARCH:TAG`` names (downloaded on first use).
        min_preview_seconds: at most one preview per this many seconds (the last step always
            sends one), so fast runs do not flood the browser.
        max_paused: paused runs kept on the device at once (over all sessions); pausing one
            more releases the oldest, whose Resume then says so.
        cache: a ModelCache to share (a new one by default).
    """

    def __init__(self, *, default_clip: str | Sequence[str] = "shapes",
                 clip_choices: Sequence[str] | None = None, device: str = "auto",
                 max_side: int = 1024, max_steps: int = 10_000,
                 output_dir: str | Path | None = None, allow_pretrained: bool = True,
                 min_preview_seconds: float = 0.25, max_paused: int = 4, cache=None):
        import tempfile

        from clipforge.guidance.clip_models import ModelCache
        from clipforge.runner import resolve_device

        self.default_clip = (default_clip,) if isinstance(default_clip, str) else tuple(default_clip)
        choices = list(self.default_clip) + [c for c in (clip_choices or ()) if c]
        self.clip_choices = tuple(dict.fromkeys(choices + self._bundled_present()))
        self.device = resolve_device(device)
        if not (MIN_SIDE <= max_side) or not (1 <= max_steps <= MAX_STEPS):
            raise ConfigError("max_side", f"max_side must be >= {MIN_SIDE} and max_steps in "
                              f"1..{MAX_STEPS}")
        self.max_side, self.max_steps = int(max_side), int(max_steps)
        self.allow_pretrained = allow_pretrained
        self.min_preview_seconds = float(min_preview_seconds)
        self.max_paused = int(max_paused)
        self._paused: list[weakref.ref] = []  # sessions holding a paused run, oldest first
        self.cache = cache if cache is not None else ModelCache()
        self.output_dir = Path(output_dir) if output_dir else Path(
            tempfile.mkdtemp(prefix="clipforge-studio-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.step_lock = threading.Lock()  # one step at a time touches the model
        self.jobs_started = 0
        self._count_lock = threading.Lock()

    @staticmethod
    def _bundled_present() -> list[str]:
        from clipforge import pretrained

        return [name for name in pretrained.names("clip") if pretrained.BUNDLED[name].present]

    # ---- checking page input ----

    def check_clip(self, specs: Sequence[str]) -> None:
        """Accept offered models (``@weight`` allowed) and open_clip pretrained ``ARCH:TAG``."""
        from clipforge.guidance.embedders import split_weight

        for spec in specs:
            name, _ = split_weight(spec)
            if name in self.clip_choices:
                continue
            if self.allow_pretrained and self._is_pretrained_name(name):
                continue
            raise InputError("clip", f"clip: {name!r} is not offered by this studio; choose one "
                             f"of {', '.join(self.clip_choices) or 'none'}"
                             + (" or an open_clip ARCH:TAG such as ViT-B-32:laion2b_s34b_b79k"
                                if self.allow_pretrained else ""))

    @staticmethod
    def _is_pretrained_name(name: str) -> bool:
        arch, sep, tag = name.partition(":")
        if not sep or "/" in tag or "\\" in tag:
            return False
        import open_clip

        return (arch, tag) in set(open_clip.list_pretrained())

    def config_from_values(self, values: dict[str, Any]) -> tuple[RunConfig, int]:
        """Build the RunConfig (and the preview interval) from the page's values.

        Everything a run could trip over before its first step is checked here (BAD_INPUTS
        rows 1-9): ranges, prompt text, sizes the generator cannot make, generator options,
        model names and every image file, so a bad setting never takes a queue slot.

        Raises:
            InputError: naming the control and the allowed range.
        """
        from clipforge import registry
        from clipforge.images import ImageReadError, load_image

        for name in TEXT_FIELDS:
            text = values.get(name) or ""
            if not isinstance(text, str):
                raise InputError(name, f"{name}: expected text")
            if len(text) > UI_MAX_PROMPT_CHARS:
                raise InputError(name, f"{name}: {len(text):,} characters; the studio accepts "
                                 f"at most {UI_MAX_PROMPT_CHARS:,} (CLIP reads ~77 tokens)")
        weight = _number("image_prompt_weight", values.get("image_prompt_weight", 1.0))
        image_prompts = [_upload_path(p) for p in (values.get("image_prompts") or [])]
        # the weight is always written, so a ':' in an uploaded file's name stays part of the path
        d: dict[str, Any] = {
            "prompt": values.get("prompt") or "",
            "negative_prompt": values.get("negative_prompt") or "",
            "image_prompts": [f"{p}:{weight:g}" for p in image_prompts if p],
            "init_image": _upload_path(values.get("init_image")),
            "clip": _as_list(values.get("clip")),
            "generator": values.get("generator"),
            "generator_options": values.get("generator_options") or {},
        }
        for name in ("init_weight", "width", "height", "steps", "lr", "cutn", "seed",
                     *ADVANCED_FIELDS):
            if name in values and values[name] is not None:
                d[name] = values[name]
            elif name in values:
                raise InputError(name, f"{name}: a value is needed")
        try:
            cfg = RunConfig.from_dict(d)
        except ConfigError as e:
            field_name = "width" if e.field == "size" else e.field
            raise InputError(field_name, str(e)) from None
        for name, value in (("width", cfg.width), ("height", cfg.height)):
            if value > self.max_side:
                raise InputError(name, f"{name}: {value} is larger than this studio allows; "
                                 f"allowed: {MIN_SIDE}..{self.max_side}")
        if cfg.steps > self.max_steps:
            raise InputError("steps", f"steps: {cfg.steps} is more than this studio allows; "
                             f"allowed: 0..{self.max_steps}")
        preview_every = _whole("preview_every", values.get("preview_every", 5), 1,
                               MAX_PREVIEW_EVERY)
        self.check_clip(cfg.clip)
        try:
            registry.check_generator(cfg.generator, cfg.width, cfg.height,
                                     cfg.generator_options)
            _check_no_server_paths(cfg.generator_options)
            from clipforge.guidance.prompts import prompts_from_config

            prompts_from_config(cfg)
        except ConfigError as e:
            field_name = "width" if e.field == "size" else e.field.split()[0]
            raise InputError(field_name if field_name in UI_FIELDS else "prompt", str(e)) from None
        files = [("init_image", cfg.init_image)] if cfg.init_image else []
        files += [("image_prompts", p) for p in image_prompts]
        for field_name, path in files:
            _check_image_size(field_name, path)
            try:
                load_image(path, field=field_name)
            except ImageReadError as e:
                raise InputError(field_name, str(e)) from None
        if cfg.seed == -1:  # drawn here, so it is shown, saved and exact in the browser
            cfg = cfg.replace(seed=random_seed())
        return cfg, preview_every

    def check_steering(self, base: RunConfig, prompt: Any, negative_prompt: Any, lr: Any,
                       preview_every: Any) -> int:
        """Check steering of a paused run (new prompts, weights, learning rate) before it is
        queued; returns the preview interval.

        Raises:
            InputError: naming the control and the allowed range.
        """
        from clipforge.guidance.prompts import prompts_from_config

        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if text is not None and not isinstance(text, str):
                raise InputError(name, f"{name}: expected text")
            if text and len(text) > UI_MAX_PROMPT_CHARS:
                raise InputError(name, f"{name}: {len(text):,} characters; the studio accepts "
                                 f"at most {UI_MAX_PROMPT_CHARS:,}")
        lr = _number("lr", lr)
        try:
            prompts_from_config(base.replace(prompt=prompt or "",
                                             negative_prompt=negative_prompt or "", lr=lr))
        except ConfigError as e:
            raise InputError(e.field if e.field in UI_FIELDS else "prompt", str(e)) from None
        return _whole("preview_every", preview_every, 1, MAX_PREVIEW_EVERY)

    def hold_paused(self, session: "Session", live: "LiveRun") -> None:
        """Park ``live`` in ``session``; beyond ``max_paused`` the oldest paused run is freed."""
        with self._count_lock:
            session.paused = live
            alive = [r for r in self._paused
                     if r() is not None and r() is not session and r().paused is not None]
            alive.append(weakref.ref(session))
            evicted = alive[:-self.max_paused] if self.max_paused > 0 else alive
            self._paused = alive[len(evicted):]
        for ref in evicted:
            old = ref()
            if old is not None:
                old.drop_paused(reason="freed to make room: more than "
                                f"{self.max_paused} runs were paused on this server")

    def start_job(self) -> int:
        with self._count_lock:
            self.jobs_started += 1
            return self.jobs_started

    def result_path(self, session: "Session", seed: int) -> Path:
        """A fresh PNG path in the output folder; no part of it comes from user text."""
        from clipforge.outputs import safe_join

        n = session.next_result_number()
        return safe_join(self.output_dir, f"clipforge-{session.id}-{n:04d}-s{seed}.png")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if str(v).strip()]


def _upload_path(value: Any) -> str | None:
    """The server path of an uploaded file (gradio passes str paths or objects with .path)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path")
    return str(getattr(value, "path", value))


def _check_no_server_paths(options: dict[str, Any]) -> None:
    """Generator options from the page may name hub models, never files on the server."""
    import os

    for key, value in options.items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if not isinstance(v, str):
                continue
            looks_local = (os.path.isabs(v) or v.startswith((".", "~")) or ".." in v
                           or "\\" in v or os.path.lexists(v))
            if looks_local:
                raise InputError("generator_options", f"generator_options: {key}={v!r} names a "
                                 "file or folder; the studio accepts model names only (the "
                                 "server's operator can offer local models)")


def _check_image_size(field_name: str, path: str) -> None:
    """Refuse uploads that decode to more than UI_MAX_IMAGE_PIXELS, reading only the header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception:  # unreadable: load_image names the reason
        return
    if w * h > UI_MAX_IMAGE_PIXELS:
        raise InputError(field_name, f"{field_name}: {w}x{h} is larger than the studio's "
                         f"{UI_MAX_IMAGE_PIXELS:,}-pixel limit for uploads")


def _number(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(name, f"{name}: must be finite, got {value!r}")
    return x


def _whole(name: str, value: Any, lo: int, hi: int) -> int:
    x = _number(name, value)
    if not x.is_integer() or not (lo <= x <= hi):
        raise InputError(name, f"{name}: {value!r} is not allowed; allowed: whole numbers "
                         f"{lo}..{hi}")
    return int(x)


# ---------------------------------------------------------------------------------------------
# a run that can stop, be steered and go on


@dataclass
class Result:
    """One finished (or stopped) image of a session."""

    path: Path
    caption: str


class LiveRun:
    """A loaded :class:`~clipforge.loop.Run`, stepped in segments between pauses.

    Iterating a Run again continues where it stopped with its optimizer (``run.opt``) intact,
    so a pause is simply leaving the loop and a resume is iterating again. A GuidedSampler
    (diffusion) restarts when iterated again, so its runs cannot pause (``resumable``).

    Args:
        cfg: validated settings (concrete seed).
        studio: supplies the model cache and device.
    """

    def __init__(self, cfg: RunConfig, studio: Studio):
        from clipforge.runner import Run

        self.run = Run(cfg, cache=studio.cache, device=studio.device)
        self.config = self.run.config          # as started (what the PNG records)
        self.current = self.config             # with the steering applied
        self.resumable = not self.run.samples
        self.history: list[dict[str, Any]] = []  # rows {step, part, loss} for the plot
        self.steering: list[dict[str, Any]] = []
        self.seconds = 0.0                       # time spent stepping, over all segments
        self.last_preview = None                 # PIL image of the latest preview

    @property
    def opt(self):
        """The run's optimizer (its moments survive pauses)."""
        return self.run.opt

    @property
    def i(self) -> int:
        """Steps taken so far."""
        return self.run.done

    @property
    def total(self) -> int:
        return self.config.steps

    @property
    def done(self) -> bool:
        return self.i >= self.total

    def steps(self) -> Iterator[Any]:
        """Steps from where the run stands to the end; the optimizer state carries over.

        Raises:
            clipforge.loop.RunOutOfMemoryError: with what to reduce (the run is released).
        """
        from clipforge.errors import RunOutOfMemoryError

        cfg = self.current
        it = iter(self.run)
        out_of_memory = False
        try:
            yield from it
        except RunOutOfMemoryError:
            out_of_memory = True  # handled below, outside this block: the error's traceback
        finally:                  # (holding the step's tensors) is dropped first
            it.close()
        if out_of_memory:
            self.release()
            raise RunOutOfMemoryError(
                f"out of memory at step {self.i + 1} ({cfg.width}x{cfg.height}, {cfg.cutn} "
                f"cutouts, {len(cfg.clip)} CLIP model(s)); try a smaller size, fewer cutouts "
                "or one CLIP model")

    def steer(self, prompt: str, negative_prompt: str, lr: float) -> None:
        """Change the prompts (and their weights) and the learning rate of a paused run.

        The optimizer's moments and the step count are kept; the new prompts are embedded once.
        """
        from clipforge.guidance.guide import Guide
        from clipforge.guidance.prompts import prompts_from_config

        new = self.current.replace(prompt=prompt, negative_prompt=negative_prompt, lr=lr)
        prompts = prompts_from_config(new)
        old = self.run.guide
        self.run.guide = Guide(old.ensemble, prompts, old.cutouts, tv_weight=old.tv_weight,
                               range_weight=old.range_weight, init_image=old.init_image,
                               init_weight=old.init_weight, generator=old.generator)
        if self.opt is not None:
            for group in self.opt.param_groups:
                group["lr"] = group["initial_lr"] = new.lr
        if (new.prompt, new.negative_prompt, new.lr) != (
                self.current.prompt, self.current.negative_prompt, self.current.lr):
            self.steering.append({"step": self.i, "prompt": new.prompt,
                                  "negative_prompt": new.negative_prompt, "lr": new.lr})
        self.current = new

    def record(self, step) -> None:
        """Keep this step's loss parts for the plot (reads them back: preview steps only)."""
        self.history.append({"step": step.i, "part": "total", "loss": float(step.loss)})
        for name, value in step.losses.items():
            self.history.append({"step": step.i, "part": name, "loss": float(value)})

    def save(self, path: Path, note: str = "") -> Path:
        """Write the current image as a PNG carrying the settings and any steering."""
        from clipforge.outputs import save_png

        extra = {}
        if self.steering:
            extra["clipforge_steering"] = json.dumps(self.steering, ensure_ascii=False)
        if note:
            extra["clipforge_note"] = note
        return save_png(path, self.run.image().cpu(), self.config, extra)

    def release(self) -> None:
        """Free the generator, guide and optimizer state (device memory goes back)."""
        if self.run is None:
            return
        # Run.release drops the generator and guide; its optimizer holds the parameters too
        self.run.opt = None
        self.run.release()


class Session:
    """One browser tab's state: its paused run, its results and its stop/pause requests.

    A ``gr.State(Session())`` deep-copies the default for every new session; ``__deepcopy__``
    returns a fresh, empty Session, so nothing is ever shared between users.
    """

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.paused: LiveRun | None = None
        self.results: list[Result] = []
        self.pause_requested = threading.Event()
        self.job = 0            # id of this session's latest job; an older one stops
        self.stopped_job = 0    # Stop pressed for jobs up to this id
        self.dropped_reason = ""  # why a paused run was freed (said on Resume)
        self._lock = threading.Lock()
        self._n = 0

    def __deepcopy__(self, memo) -> "Session":
        return Session()

    def next_result_number(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def begin(self, job: int) -> None:
        """A job of this session starts: a paused run is dropped, old requests cleared."""
        with self._lock:
            self.job = job
            self.pause_requested.clear()

    def should_stop(self, job: int) -> bool:
        return self.job != job or self.stopped_job >= job

    def stop(self) -> None:
        """Stop the running job (at its next step) and free a paused run."""
        with self._lock:
            self.stopped_job = self.job
        self.drop_paused()

    def drop_paused(self, reason: str = "") -> None:
        with self._lock:
            paused, self.paused = self.paused, None
            self.dropped_reason = reason if paused is not None else self.dropped_reason
        if paused is not None:
            paused.release()

    def add_result(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)
            del self.results[:-MAX_RESULTS_PER_SESSION]

    def gallery(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(str(r.path), r.caption) for r in reversed(self.results)]


def progress_text(live: LiveRun, segment_steps: int, segment_seconds: float,
                  state: str = "running") -> str:
    """``running · step 12/50 · 3.1 s · ETA 9.8 s · seed 7`` for the status line."""
    rate = segment_steps / segment_seconds if segment_seconds > 0 and segment_steps else 0.0
    eta = (live.total - live.i) / rate if rate else float("nan")
    eta_s = f"{eta:.1f} s" if math.isfinite(eta) else "-"
    return (f"{state} · step {live.i}/{live.total} · {live.seconds:.1f} s elapsed · "
            f"ETA {eta_s} · seed {live.config.seed}")
