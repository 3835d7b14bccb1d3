"""The quick default run: the studio's starting values, and what a run will take before it starts.

- :func:`starting_values`: the bundled guide's recommended settings
  (:func:`clipforge.pretrained.recommended`, read at start-up, never copied) for the controls the
  page offers, so the studio starts on the size, steps and cutouts measured for that guide; any
  other model keeps RunConfig's defaults.
- :class:`Timings`: measured seconds per step, by what sets a step's cost (models, generator and
  its options, size, cutouts, augmentation, precision): the median time of a step, so a step
  slowed by another process on the machine does not set it. Two things measure it: the
  calibration at launch (:func:`calibrate`: the starting settings, :data:`CALIBRATION_STEPS`
  steps after one warm-up step) and every run (its steps after the first of each segment, the
  latest run winning). Before a run starts
  the page says "about N s" from it (:meth:`Timings.text`); settings never measured on this
  server say that the run's first steps will measure them.

Nothing here imports gradio.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any, Sequence

from clipforge.config import RunConfig

CALIBRATION_STEPS = 5  # timed steps of the launch calibration (after one untimed warm-up step)


def starting_values(clip: Sequence[str], generator: str, offered: Sequence[str]) -> dict[str, Any]:
    """The recommended settings of ``clip`` guiding ``generator`` that are among ``offered``.

    Args:
        clip: the studio's default CLIP spec(s); generator: the default generator;
        offered: the page's settings (the rest, e.g. precision, applies through
            :meth:`RunConfig.from_settings` when the run is built).
    """
    from clipforge.pretrained import recommended

    return {k: v for k, v in recommended(list(clip), generator).items() if k in offered}


def cost_key(cfg: RunConfig) -> tuple:
    """What sets the time of one step of ``cfg`` (prompts, seed, steps and lr do not)."""
    return (tuple(cfg.clip), cfg.generator,
            json.dumps(dict(cfg.generator_options), sort_keys=True, default=str),
            cfg.width, cfg.height, cfg.cutn, cfg.augment, cfg.precision,
            bool(cfg.init_image), len(cfg.image_prompts))


class Timings:
    """Measured seconds per step on this server, by :func:`cost_key`, with where each came from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_step: dict[tuple, tuple[float, str]] = {}

    def record(self, cfg: RunConfig, step_seconds: Sequence[float], source: str) -> None:
        """Keep the median of ``step_seconds``, timed steps of ``cfg`` (the latest wins).

        Args:
            source: where it was measured, as the page says it ("at launch", "by a run").
        """
        if step_seconds:
            with self._lock:
                self._per_step[cost_key(cfg)] = (statistics.median(step_seconds), source)

    def per_step(self, cfg: RunConfig) -> tuple[float, str] | None:
        """(seconds per step, where measured) for settings like ``cfg``, or None if never."""
        with self._lock:
            return self._per_step.get(cost_key(cfg))

    def seconds(self, cfg: RunConfig, images: int = 1) -> float | None:
        """Estimated stepping time of ``images`` runs of ``cfg`` (model loading not counted)."""
        measured = self.per_step(cfg)
        return None if measured is None else measured[0] * cfg.steps * images

    def text(self, cfg: RunConfig, images: int = 1) -> str:
        """``about 3 s (40 steps at 0.07 s/step, measured at launch)`` for the page."""
        measured = self.per_step(cfg)
        if measured is None:
            return ("time: not measured yet for these settings on this server; the run's first "
                    "steps measure it (the ETA in the progress line)")
        rate, source = measured
        total = rate * cfg.steps * images
        shown = f"{total:.0f} s" if total >= 10 else f"{total:.1f} s"
        what = f"{images} × {cfg.steps} steps" if images > 1 else f"{cfg.steps} steps"
        return f"about {shown} ({what} at {rate:.3f} s/step, measured {source})"


def calibrate(studio, cfg: RunConfig, steps: int = CALIBRATION_STEPS) -> float:
    """Time ``steps`` steps of ``cfg`` (after one warm-up step) on the studio's device and
    record them as measured at launch; the models stay in the studio's cache for the first run.

    Args:
        studio: the :class:`~clipforge.ui.session.Studio` (cache, device, step lock, timings).
        cfg: the settings to measure (its prompt, steps and outputs are replaced).

    Returns:
        seconds per step (the median).
    """
    from clipforge.runner import Run

    probe = cfg.replace(prompt=cfg.prompt or "a red circle", steps=steps + 1, save_every=0,
                        save_video=False, seed=0)
    with studio.step_lock:
        run = Run(probe, cache=studio.cache, device=studio.device)
        try:
            it = iter(run)
            next(it)  # warm-up: first-call costs (allocations, kernels) are not a step's cost
            times, t0 = [], time.perf_counter()
            for _ in it:
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
        finally:
            run.release()
    studio.timings.record(cfg, times, "at launch")
    return statistics.median(times)


def calibrate_start(studio, initial: dict[str, Any]) -> float | None:
    """:func:`calibrate` the page's starting values (``initial``) at launch; a model that cannot
    load is logged here and said at Generate. Returns seconds per step, or None."""
    import logging

    from clipforge.errors import RunError, UsageError

    try:
        cfg, _ = studio.config_from_values({**initial, "prompt": initial.get("prompt") or
                                            "a red circle"})
        return calibrate(studio, cfg)
    except (UsageError, RunError) as e:
        logging.getLogger("clipforge.ui").warning("no step-time calibration: %s", e)
        return None
