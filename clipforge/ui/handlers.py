"""How the studio streams one run (:class:`Handlers`): load it, step it, keep its image.

A run is loaded under the studio's step lock and streamed (:meth:`Handlers.drive`): previews,
the loss plot, the progress line and bar, until it ends (saved to the gallery, with its
progress video when asked for), is paused (kept for Resume) or is stopped (its last image saved
as a partial result). Every streamed update is a tuple in the order of :data:`OUTPUTS`.
Generate and Resume (checks, batches) are :class:`clipforge.ui.jobs.Jobs`, a subclass; the small
events (pause, stop, cancel, the queue place, ...) are :class:`clipforge.ui.events.Events`.

Errors: whatever ends a job (bad input, a model that cannot load, divergence, out of memory, a
bug) first sends an idle page with the error next to the buttons, then is raised as a
``gr.Error`` (:meth:`Handlers.recovering`), so the page is never left "running".
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Sequence

import gradio as gr

from clipforge.errors import RunError, UsageError
from clipforge.ui.controls import STATE_OUTPUTS, page_state, plot_update
from clipforge.ui.inputs import InputError
from clipforge.ui.live import LiveRun, Result, loss_frame, progress_bar, progress_text
from clipforge.ui.session import Session, Studio

# what every streaming event updates, in this order: the displays, then the page's state
DISPLAYS = ("preview", "plot", "status", "gallery", "download", "message", "progress", "video",
            "estimate")
OUTPUTS = DISPLAYS + STATE_OUTPUTS
STATUS_SECONDS = 0.5  # the progress line updates at least this often between previews
_log = logging.getLogger("clipforge.ui")


def show(state: str | None = None, resumable: bool = True, **shown: Any) -> tuple:
    """One update of :data:`OUTPUTS`: the displays given by name, the page's ``state`` (see
    :func:`~clipforge.ui.controls.page_state`) or single state outputs by name; the rest is left
    as it is on the page."""
    unknown = set(shown) - set(OUTPUTS)
    assert not unknown, unknown
    states = page_state(state, resumable) if state else tuple(gr.skip() for _ in STATE_OUTPUTS)
    values = dict(zip(STATE_OUTPUTS, states), **{k: v for k, v in shown.items()
                                                  if k in STATE_OUTPUTS})
    return tuple(shown.get(n, gr.skip()) for n in DISPLAYS) + tuple(values[n]
                                                                     for n in STATE_OUTPUTS)


def failure_text(err: BaseException) -> str:
    """What the page says about an error that ended a job (in the studio's terms)."""
    from clipforge.errors import ModelLoadError
    from clipforge.offline import offline_reason

    if isinstance(err, gr.Error):
        return str(err.message)
    reason = offline_reason() if isinstance(err, ModelLoadError) else None
    if reason:  # the engine's hint names CLI flags; say what a studio user can do instead
        head = str(err).split(" (")[0]
        return (f"{head}: this server cannot reach the model hub ({reason}). Choose one of the "
                "offered CLIP models (the bundled shapes model works offline), or ask the "
                "server's operator to download the model and offer its folder in the list.")
    if isinstance(err, (UsageError, RunError)):
        return str(err)
    return (f"the run failed unexpectedly ({type(err).__name__}); the server's log has the "
            "details")


def guarded(fn):
    """Call ``fn()``; clipforge's input and run errors become a ``gr.Error`` with their message."""
    try:
        return fn()
    except (UsageError, RunError) as e:
        raise gr.Error(failure_text(e), print_exception=False) from None


def validation(names: Sequence[str], err: InputError | None = None) -> list:
    """The validator's answer for ``names``: all valid, or ``err`` shown on its control."""
    out = [gr.validate(True, "") for _ in names]
    if err is not None:
        out[list(names).index(err.field) if err.field in names else 0] = \
            gr.validate(False, str(err))
    return out


class Handlers:
    """Streaming runs over one server's :class:`~clipforge.ui.session.Studio`.

    Args:
        studio: the shared models, limits, step lock and timings.
    """

    def __init__(self, studio: Studio):
        self.studio = studio

    # ---- the run ----

    def recovering(self, sess: Session | None, stream):
        """Stream ``stream``; when it fails, end on an idle (or still paused) page with the error
        next to the buttons, then raise it as a ``gr.Error`` (API clients get it too)."""
        try:
            yield from stream
        except Exception as e:
            text = failure_text(e)
            if not isinstance(e, (gr.Error, UsageError, RunError)):
                _log.exception("a studio job failed")
            paused = sess is not None and sess.paused is not None
            yield show(status="failed" + (" · the run is still paused" if paused else ""),
                       message=f"**Error:** {text}", state="paused" if paused else "idle")
            raise gr.Error(text, print_exception=False) from None

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
        the gallery), is paused (kept in the session) or is stopped (saved as a partial result).

        Args:
            live: the run; sess: its tab's Session; job: this job's id (Stop names it);
            every: a preview and a loss point every this many steps.
        """
        from clipforge.images import to_pil

        studio, steps, can = self.studio, live.steps(), live.resumable
        seg_steps, seg_seconds, paused, last_sent, times = 0, 0.0, False, 0.0, []
        try:
            while not sess.should_stop(job):
                with studio.step_lock:
                    t0 = time.perf_counter()
                    step = guarded(lambda: next(steps, None))
                    dt = time.perf_counter() - t0
                if step is None:
                    break
                live.seconds += dt
                seg_seconds += dt
                seg_steps += 1
                times.append(dt)  # the first of a segment carries its warm-up: not timed
                if live.frames is not None:
                    live.frames(step)
                now = time.perf_counter()
                if step.i == step.total or (step.i % every == 0 and
                                            now - last_sent >= studio.min_preview_seconds):
                    last_sent = now
                    live.record(step)
                    live.last_preview = to_pil(step.image)
                    yield show(preview=live.last_preview, plot=plot_update(loss_frame(live)),
                               status=progress_text(live, seg_steps, seg_seconds),
                               progress=progress_bar(live), state="running", resumable=can)
                elif now - last_sent >= STATUS_SECONDS:
                    # progress text only; each yield is also where a cancelled job ends
                    last_sent = now
                    yield show(status=progress_text(live, seg_steps, seg_seconds),
                               progress=progress_bar(live), state="running", resumable=can)
                if sess.pause_requested.is_set() and can and not live.done:
                    studio.hold_paused(sess, live)
                    paused = True
                    studio.timings.record(live.config, times[1:], "by an earlier run")
                    yield show(plot=plot_update(loss_frame(live)), status=progress_text(
                        live, seg_steps, seg_seconds, "paused") + " — edit the prompt, weights "
                        "or learning rate, then Resume", state="paused")
                    return
            # the step time of these settings, which "about N s" says from now on
            studio.timings.record(live.config, times[1:], "by an earlier run")
            if sess.should_stop(job) and not live.done:
                yield self.keep(live, sess, stopped=True)
            else:
                yield self.keep(live, sess, stopped=False, segment=(seg_steps, seg_seconds))
        finally:
            steps.close()
            if not paused:
                live.release()

    def keep(self, live: LiveRun, sess: Session, stopped: bool,
             segment: tuple[int, float] = (0, 0.0)) -> tuple:
        """Save the run's image (and its progress video) to the output folder and the gallery;
        the page goes idle unless more images of its batch follow.

        A stopped run's image is saved too, marked as partial (in its file name, its
        ``clipforge_note`` and its caption), as A1111 keeps an interrupted image; the images
        of its batch not made yet are not made.

        Args:
            live: the run; sess: its Session; stopped: it was stopped before its last step;
            segment: steps and seconds since the last (re)start, for the status line.
        """
        from clipforge.images import to_pil

        if stopped and live.i == 0:
            return show(status="stopped before the first step", message="", state="idle")
        note = f"partial: stopped at step {live.i} of {live.total}" if stopped else ""
        with self.studio.step_lock:
            path = live.save(self.studio.result_path(sess, live.config.seed, partial=stopped),
                             note=note)
            image = guarded(lambda: to_pil(live.run.image()))
        caption = f"{live.config.prompt[:60]} · seed {live.config.seed}" + (
            f" · stopped at step {live.i}/{live.total}" if stopped else "")
        sess.add_result(Result(path, caption))
        k, n = live.batch
        status = (f"stopped at step {live.i}/{live.total} · kept as a partial result"
                  + (f" · image {k} of {n}" if n > 1 else "")
                  if stopped else progress_text(live, *segment, "done"))
        video = live.video_of(path)
        return show(preview=image, plot=plot_update(loss_frame(live)), status=status, message="",
                    estimate=self.studio.timings.text(live.config, n),
                    gallery=self.gallery(sess), download=str(path), progress=progress_bar(live),
                    video=str(video) if video else None,
                    state="running" if k < n and not stopped else "idle")

    def gallery(self, sess: Session) -> list[tuple[str, str]]:
        """The gallery of ``sess``: its results, newest first."""
        return sess.gallery()
