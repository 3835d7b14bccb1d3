"""What the studio's buttons do: one :class:`Handlers` object whose methods are the page's events.

Generate and Resume are checked by a validator *before* they take a queue slot
(:meth:`Handlers.validate`, :meth:`Handlers.validate_steer`), then load the run under the
studio's step lock and stream it (:meth:`Handlers.drive`): previews, the loss plot and the
progress line, until it ends, is paused (kept for Resume) or is stopped (released). The small
events (pause, stop, settle the buttons, restore settings from a PNG, draw a seed) are methods
too. Every streamed update is a tuple in the order of :data:`OUTPUTS`.

Errors: clipforge's bad-input and run errors (:class:`~clipforge.errors.UsageError`,
:class:`~clipforge.errors.RunError`) become a ``gr.Error`` with their message (:func:`guarded`).
"""

from __future__ import annotations

import time
import warnings
from typing import Sequence

import gradio as gr

from clipforge.errors import RunError, UsageError
from clipforge.ui.controls import buttons, generator_info, options_info, restore_controls
from clipforge.ui.inputs import RESTORABLE, UI_FIELDS, InputError, random_seed
from clipforge.ui.live import LiveRun, Result, loss_frame, progress_text
from clipforge.ui.session import Session, Studio

# what every streaming event updates, in this order: four displays, the result, four buttons
OUTPUTS = ("preview", "plot", "status", "gallery", "download", "generate", "pause", "resume",
           "stop")
BUTTONS = OUTPUTS[5:]
STATUS_SECONDS = 0.5  # the progress line updates at least this often between previews
_SKIP = object()


def _show(preview=_SKIP, plot=_SKIP, status=_SKIP, gallery=_SKIP, download=_SKIP,
          state: str | None = None) -> tuple:
    """One update of :data:`OUTPUTS`; what is not given is left as it is on the page."""
    shown = tuple(gr.skip() if v is _SKIP else v for v in (preview, plot, status, gallery,
                                                          download))
    return shown + (buttons(state) if state else tuple(gr.skip() for _ in BUTTONS))


def guarded(fn):
    """Call ``fn()``; clipforge's input and run errors become a ``gr.Error`` with their message."""
    try:
        return fn()
    except (UsageError, RunError) as e:
        raise gr.Error(str(e), print_exception=False) from None


def validation(names: Sequence[str], err: InputError | None = None) -> list:
    """The validator's answer for ``names``: all valid, or ``err`` shown on its control."""
    out = [gr.validate(True, "") for _ in names]
    if err is not None:
        out[list(names).index(err.field) if err.field in names else 0] = \
            gr.validate(False, str(err))
    return out


def closed(sess: Session | None) -> None:
    """A tab went away: stop its job and free its paused run."""
    if sess is not None:
        sess.stop()


class Handlers:
    """The page's events, over one server's :class:`~clipforge.ui.session.Studio`.

    Args:
        studio: the shared models, limits and step lock.
    """

    def __init__(self, studio: Studio):
        self.studio = studio

    # ---- Generate ----

    def validate(self, *args):
        """Check the page's values before a job is queued; a bad one is marked on its control.

        Args:
            args: the values of :data:`~clipforge.ui.inputs.UI_FIELDS`, then the Session.
        """
        *values, _ = args
        try:
            self.studio.config_from_values(dict(zip(UI_FIELDS, values)))
        except InputError as e:
            return validation([*UI_FIELDS, "session"], e)
        return validation(args)

    def generate(self, *args):
        """Run one generation from the page's values, streaming :data:`OUTPUTS` updates.

        Args:
            args: the values of :data:`~clipforge.ui.inputs.UI_FIELDS`, then the Session.
        """
        *values, sess = args  # the validator checked them too; the job does not rely on it
        cfg, every = guarded(lambda: self.studio.config_from_values(dict(zip(UI_FIELDS, values))))
        job = self.studio.start_job()
        sess.drop_paused()
        sess.begin(job)
        yield _show(plot=loss_frame(None), status="loading the model…", gallery=sess.gallery(),
                    state="running")
        live = guarded(lambda: self.load(cfg))
        yield from self.drive(live, sess, job, every)

    # ---- Resume a paused run, steered ----

    def validate_steer(self, prompt, negative_prompt, lr, preview_every, sess):
        """Check the steering (and that a run is paused) before Resume is queued.

        Args:
            prompt, negative_prompt, lr, preview_every: the steering controls' values.
            sess: the tab's Session.
        """
        names = ("prompt", "negative_prompt", "lr", "preview_every", "session")
        try:
            self._check_steer(prompt, negative_prompt, lr, preview_every, sess)
        except InputError as e:
            return validation(names, e)
        return validation(names)

    def resume(self, prompt, negative_prompt, lr, preview_every, sess):
        """Steer the session's paused run and go on with it, streaming :data:`OUTPUTS` updates.

        Args: as :meth:`validate_steer`.
        """
        every = guarded(lambda: self._check_steer(prompt, negative_prompt, lr, preview_every, sess))
        live = sess.paused
        job = self.studio.start_job()
        sess.begin(job)
        sess.paused = None
        try:
            with self.studio.step_lock:
                guarded(lambda: live.steer(prompt or "", negative_prompt or "", float(lr)))
        except gr.Error:
            self.studio.hold_paused(sess, live)  # bad steering: the run stays paused
            raise
        yield _show(plot=loss_frame(live), status=progress_text(live, 0, 0, "resuming"),
                    gallery=sess.gallery(), state="running")
        yield from self.drive(live, sess, job, every)

    def _check_steer(self, prompt, negative_prompt, lr, preview_every, sess) -> int:
        if sess is None or sess.paused is None:
            why = f" (the paused run was {sess.dropped_reason})" if sess and \
                sess.dropped_reason else ""
            raise InputError("prompt", f"nothing to resume: no run is paused in this session{why}")
        return self.studio.check_steering(sess.paused.current, prompt, negative_prompt, lr,
                                          preview_every)

    # ---- the run ----

    def load(self, cfg) -> LiveRun:
        """Load the run's models and generator under the step lock; its warnings are shown.

        Args:
            cfg: the checked RunConfig (a concrete seed).
        """
        with self.studio.step_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            live = LiveRun(cfg, self.studio)
        for w in caught[:3]:
            gr.Warning(str(w.message))
        return live

    def drive(self, live: LiveRun, sess: Session, job: int, every: int):
        """Step a run under the lock, streaming :data:`OUTPUTS` updates, until it ends (saved to
        the gallery), is paused (kept in the session) or is stopped (released).

        Args:
            live: the run; sess: its tab's Session; job: this job's id (a newer one stops it);
            every: a preview and a loss point every this many steps.
        """
        from clipforge.images import to_pil

        studio, steps = self.studio, live.steps()
        seg_steps, seg_seconds, paused, finished, last_sent = 0, 0.0, False, False, 0.0
        try:
            while not sess.should_stop(job):
                with studio.step_lock:
                    t0 = time.perf_counter()
                    step = guarded(lambda: next(steps, None))
                    dt = time.perf_counter() - t0
                if step is None:
                    finished = True
                    break
                live.seconds += dt
                seg_seconds += dt
                seg_steps += 1
                now = time.perf_counter()
                if sess.should_stop(job):
                    break  # Stop was pressed during this step: send no stale progress
                if step.i == step.total or (step.i % every == 0 and
                                            now - last_sent >= studio.min_preview_seconds):
                    last_sent = now
                    live.record(step)
                    live.last_preview = to_pil(step.image)
                    yield _show(live.last_preview, loss_frame(live),
                                progress_text(live, seg_steps, seg_seconds), state="running")
                elif now - last_sent >= STATUS_SECONDS:
                    # progress text only; each yield is also where a cancelled job ends
                    last_sent = now
                    yield _show(status=progress_text(live, seg_steps, seg_seconds))
                if sess.pause_requested.is_set() and not live.resumable:
                    sess.pause_requested.clear()
                    gr.Warning(f"generator {live.config.generator!r} samples in one pass "
                               "and cannot pause; let it finish or Stop it")
                if sess.pause_requested.is_set() and not live.done:
                    studio.hold_paused(sess, live)
                    paused = True
                    yield _show(plot=loss_frame(live), status=progress_text(
                        live, seg_steps, seg_seconds, "paused") + " — edit the prompt, weights "
                        "or learning rate, then Resume", state="paused")
                    return
            if sess.should_stop(job) and not finished:
                # the last word of a stopped job, so a progress update racing the Stop click
                # cannot leave "running" on the page
                yield _show(status="stopped", state="idle")
            elif finished or live.done:
                with studio.step_lock:
                    path = live.save(studio.result_path(sess, live.config.seed))
                    image = guarded(lambda: to_pil(live.run.image()))
                sess.add_result(Result(path, f"{live.config.prompt[:60]} · seed "
                                             f"{live.config.seed}"))
                yield _show(image, loss_frame(live), progress_text(live, seg_steps, seg_seconds,
                            "done"), sess.gallery(), str(path), state="idle")
        finally:
            steps.close()
            if not paused:
                live.release()

    # ---- the small events ----

    def settle(self, sess: Session | None) -> tuple:
        """The buttons after a job ended (finished, failed or paused) in ``sess``."""
        return buttons("paused" if sess is not None and sess.paused is not None else "idle")

    def pause(self, sess: Session):
        """Ask ``sess``'s running job to pause at its next step (it writes "paused" itself)."""
        # only the button: a second writer of the status could land after the job's own
        # "paused" and leave a stale "pausing" on the page
        sess.pause_requested.set()
        return gr.update(interactive=False)

    def stop(self, sess: Session) -> tuple:
        """Stop ``sess``'s running job and free its paused one."""
        sess.stop()
        return "stopped", *buttons("idle")

    def randomize(self) -> int:
        """A fresh seed for the seed box."""
        return random_seed()

    def generator_changed(self, name: str) -> tuple:
        """The help of the generator dropdown and of its options box, for generator ``name``."""
        return gr.update(info=generator_info(name)), gr.update(info=options_info(name))

    def restore(self, file) -> list:
        """The :data:`~clipforge.ui.inputs.RESTORABLE` settings of ``file``, a dropped PNG."""
        return restore_controls(file, RESTORABLE)
