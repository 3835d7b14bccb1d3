"""The studio's run: a Run that can stop at any step, be steered and go on, and what it shows.

:class:`LiveRun` wraps a :class:`~clipforge.runner.Run`. Iterating a Run again continues from
``run.done`` with ``run.opt`` intact (through :func:`clipforge.loop.optimize`'s ``opt=`` /
``start=``), so a pause is leaving the loop and a resume is iterating again; steering swaps the
Guide's prompts and the learning rate in between. :func:`progress_text` and :func:`loss_frame`
are what the page shows of it; :class:`Result` is one image in a session's gallery.

Nothing here imports gradio (pandas is imported by :func:`loss_frame` only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from clipforge.config import RunConfig

PLOT_COLUMNS = ("step", "part", "loss")


@dataclass
class Result:
    """One finished (or stopped) image of a session: its PNG and the gallery caption."""

    path: Path
    caption: str


class LiveRun:
    """A loaded Run, stepped in segments between pauses.

    A GuidedSampler (diffusion) restarts when iterated again, so its runs cannot pause
    (``resumable`` is False).

    Args:
        cfg: validated settings (a concrete seed).
        studio: supplies the model cache and the device (a :class:`~clipforge.ui.session.Studio`).
    """

    def __init__(self, cfg: RunConfig, studio):
        from clipforge.frames import recorder_for
        from clipforge.runner import Run

        self.frames = recorder_for(cfg)          # the progress video's frames, if asked for
        self.run = Run(cfg, cache=studio.cache, device=studio.device)
        self.config = self.run.config          # as started (what the PNG records)
        self.current = self.config             # with the steering applied
        self.resumable = not self.run.samples
        self.history: list[dict[str, Any]] = []  # rows {step, part, loss} for the plot
        self.steering: list[dict[str, Any]] = []
        self.seconds = 0.0                       # time spent stepping, over all segments
        self.last_preview = None                 # PIL image of the latest preview
        self.batch = (1, 1)                      # image k of the n one Generate makes

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
        """Steps the run takes in all."""
        return self.config.steps

    @property
    def done(self) -> bool:
        """True once every step is taken."""
        return self.i >= self.total

    def steps(self) -> Iterator[Any]:
        """Steps from where the run stands to the end; the optimizer state carries over.

        Raises:
            clipforge.errors.RunOutOfMemoryError: with what to reduce (the run is released).
        """
        from clipforge.errors import RunOutOfMemoryError
        from clipforge.runner import out_of_memory

        cfg = self.current
        it = iter(self.run)
        failed = False
        try:
            yield from it
        except RunOutOfMemoryError:
            failed = True  # raised again below, outside this block: the first error's
        finally:           # context (holding the step's tensors) is dropped with it
            it.close()
        if failed:
            self.release()
            raise out_of_memory(cfg, self.i + 1)

    def steer(self, prompt: str, negative_prompt: str, lr: float) -> None:
        """Change the prompts (and their weights) and the learning rate of a paused run.

        The optimizer's moments and the step count are kept; the new prompts are embedded once.

        Args:
            prompt, negative_prompt: the new prompts (``|`` parts, ``:w`` weights).
            lr: the new learning rate (> 0).
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
        """Keep this step's loss parts for the plot (reads them back: preview steps only).

        Args:
            step: a :class:`~clipforge.loop.Step` of this run.
        """
        self.history.append({"step": step.i, "part": "total", "loss": float(step.loss)})
        for name, value in step.losses.items():
            self.history.append({"step": step.i, "part": name, "loss": float(value)})

    def save(self, path: Path, note: str = "") -> Path:
        """Write the current image as a PNG carrying the settings and any steering (and its
        progress video beside it, ``.mp4`` and ``.gif``, when one was asked for).

        Args:
            path: the PNG to write (atomically).
            note: optional text stored as ``clipforge_note``.
        """
        from clipforge.outputs import save_png

        extra = {}
        if self.steering:
            extra["clipforge_steering"] = json.dumps(self.steering, ensure_ascii=False)
        if note:
            extra["clipforge_note"] = note
        saved = save_png(path, self.run.image().cpu(), self.config, extra,
                         options=self.run.generator_settings())
        if self.frames is not None and self.frames.frames:
            from clipforge.frames import write_beside

            write_beside(saved, self.frames.encoded())
        return saved

    def video_of(self, png: Path) -> Path | None:
        """The progress video written beside ``png`` by :meth:`save` (None when none was)."""
        mp4 = Path(png).with_suffix(".mp4")
        return mp4 if self.frames is not None and mp4.is_file() else None

    def release(self) -> None:
        """Free the generator, guide and optimizer state (device memory goes back)."""
        if self.run is not None:
            self.run.release()


def progress_text(live: LiveRun, segment_steps: int, segment_seconds: float,
                  state: str = "running") -> str:
    """``running · step 12/50 · 3.1 s elapsed · ETA 9.8 s · seed 7`` for the status line.

    Args:
        live: the run.
        segment_steps, segment_seconds: steps and time since the last (re)start, for the rate.
        state: the word the line starts with.
    """
    rate = segment_steps / segment_seconds if segment_seconds > 0 and segment_steps else 0.0
    eta = (live.total - live.i) / rate if rate else float("nan")
    eta_s = f"{eta:.1f} s" if math.isfinite(eta) else "-"
    k, n = live.batch
    return (f"{state} · step {live.i}/{live.total} · {live.seconds:.1f} s elapsed · "
            f"ETA {eta_s} · seed {live.config.seed}" + (f" · image {k} of {n}" if n > 1 else ""))


def progress_bar(live: LiveRun | None) -> str:
    """The progress bar's HTML: a ``<progress>`` of the run's steps, and "step k of n" (with the
    image of a batch); an empty string before a run."""
    if live is None:
        return ""
    k, n = live.batch
    image = f" · image {k} of {n}" if n > 1 else ""
    return (f'<progress value="{live.i}" max="{max(live.total, 1)}" aria-label="progress">'
            f'</progress> <span>step {live.i} of {live.total}{image}</span>')


def loss_frame(live: LiveRun | None, max_points: int = 200):
    """The loss history as a DataFrame (step, part, loss) thinned to ``max_points`` steps.

    Args:
        live: the run (None before one is loaded).
        max_points: most steps kept; evenly spaced, always with the latest.

    Returns:
        the frame, or None before the first point (a plot first given an empty frame draws no
        lines later).
    """
    import pandas as pd

    rows = live.history if live is not None else []
    if not rows:
        return None
    steps = sorted({r["step"] for r in rows})
    if len(steps) > max_points:
        keep = {steps[round(k * (len(steps) - 1) / (max_points - 1))] for k in range(max_points)}
        rows = [r for r in rows if r["step"] in keep]
    frame = pd.DataFrame(rows, columns=list(PLOT_COLUMNS))
    return frame.astype({"step": "int64", "part": "str", "loss": "float64"})
