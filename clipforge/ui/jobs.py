"""What Generate and Resume do: check the page's values, then make a batch of images
(:class:`Jobs`).

Generate and Resume are checked by a validator *before* they take a queue slot
(:meth:`Jobs.validate`, :meth:`Jobs.validate_steer`). One Generate is one queued job that makes
``batch_count`` images, seeds k, k+1, ..., k+n-1 (a seed of -1 draws k, which the status, the
captions and **Last seed** show); each image is streamed, saved and added to the gallery as it
ends (:meth:`~clipforge.ui.handlers.Handlers.drive`). Stop ends the image being made (kept as a
partial result) and the rest of the batch; Pause pauses the image being made, and Resume finishes
it and then makes the rest. Cancel takes the whole job out of the queue.
"""

from __future__ import annotations

from typing import Sequence

import gradio as gr

from clipforge.config import RunConfig
from clipforge.ui.controls import plot_update
from clipforge.ui.handlers import Handlers, guarded, show, validation
from clipforge.ui.inputs import UI_FIELDS, InputError, batch_count
from clipforge.ui.live import loss_frame, progress_bar, progress_text
from clipforge.ui.session import Session


class Jobs(Handlers):
    """Generate and Resume, over one server's :class:`~clipforge.ui.session.Studio`.

    Args:
        studio: the shared models, limits, step lock and timings.
    """

    # ---- Generate ----

    def validate(self, *args):
        """Check the page's values before a job is queued; a bad one is marked on its control.

        Args:
            args: the values of :data:`~clipforge.ui.inputs.UI_FIELDS`, the owner token, the
                Session.
        """
        *values, owner, sess = args
        try:
            self.studio.check_owner(sess, owner, "generate")
            self.studio.config_from_values(dict(zip(UI_FIELDS, values)))
        except InputError as e:
            return validation([*UI_FIELDS, "owner", "session"], e)
        return validation(args)

    def generate(self, *args):
        """Make the page's batch of images, streaming :data:`~clipforge.ui.handlers.OUTPUTS`.

        Args: as :meth:`validate`.
        """
        *values, owner, sess = args  # the validator checked them too; the job does not rely on it
        yield from self.recovering(sess, self._generate(values, owner, sess))

    def _generate(self, values, owner, sess: Session):
        guarded(lambda: self.studio.check_owner(sess, owner, "generate"))
        if sess.paused is not None:
            raise gr.Error("a run is paused in this session: Resume or Stop it first",
                           print_exception=False)
        page = dict(zip(UI_FIELDS, values))
        cfg, every = guarded(lambda: self.studio.config_from_values(page))
        n = guarded(lambda: batch_count(self.studio, page, cfg))
        job = self.studio.start_job()
        sess.begin(job)
        sess.last_seed = cfg.seed
        sess.batch_rest = []
        yield show(plot=plot_update(None), message="", progress="", video=None,
                   status=f"loading the model… · {self.studio.timings.text(cfg, n)}",
                   gallery=self.gallery(sess), state="running")
        yield from self.series(sess, job, [cfg.replace(seed=cfg.seed + k) for k in range(n)],
                               every, first=1, of=n)

    def series(self, sess: Session, job: int, cfgs: Sequence[RunConfig], every: int,
               first: int, of: int):
        """Make the images of ``cfgs`` one after the other (image ``first`` of ``of`` first),
        until the last is saved, one is paused (the rest wait for Resume) or the job is stopped.
        """
        for k, cfg in enumerate(cfgs):
            if k:
                yield show(status=f"loading image {first + k} of {of}…", state="running")
            live = guarded(lambda: self.load(cfg))
            live.batch = (first + k, of)
            yield from self.drive(live, sess, job, every)
            if sess.paused is live:
                sess.batch_rest = list(cfgs[k + 1:])
                return
            if sess.should_stop(job):
                return

    # ---- Resume a paused run, steered ----

    def validate_steer(self, prompt, negative_prompt, lr, preview_every, owner, sess):
        """Check the steering (and that a run is paused) before Resume is queued.

        Args:
            prompt, negative_prompt, lr, preview_every: the steering controls' values.
            owner: the page's owner token; sess: the tab's Session.
        """
        names = ("prompt", "negative_prompt", "lr", "preview_every", "owner", "session")
        try:
            self.studio.check_owner(sess, owner, "resume")
            self._check_steer(prompt, negative_prompt, lr, preview_every, sess)
        except InputError as e:
            return validation(names, e)
        return validation(names)

    def resume(self, prompt, negative_prompt, lr, preview_every, owner, sess):
        """Steer the session's paused run and go on with it (then with the rest of its batch),
        streaming :data:`~clipforge.ui.handlers.OUTPUTS` updates.

        Args: as :meth:`validate_steer`.
        """
        yield from self.recovering(sess, self._resume(prompt, negative_prompt, lr,
                                                      preview_every, owner, sess))

    def _resume(self, prompt, negative_prompt, lr, preview_every, owner, sess: Session):
        guarded(lambda: self.studio.check_owner(sess, owner, "resume"))
        every = guarded(lambda: self._check_steer(prompt, negative_prompt, lr, preview_every, sess))
        live, rest = sess.paused, sess.batch_rest
        job = self.studio.start_job()
        sess.begin(job)
        sess.paused, sess.batch_rest = None, []
        try:
            with self.studio.step_lock:
                guarded(lambda: live.steer(prompt or "", negative_prompt or "", float(lr)))
        except gr.Error:
            self.studio.hold_paused(sess, live)  # bad steering: the run stays paused
            sess.batch_rest = rest
            raise
        yield show(plot=plot_update(loss_frame(live)), status=progress_text(live, 0, 0, "resuming"),
                   progress=progress_bar(live), message="", state="running")
        yield from self.drive(live, sess, job, every)
        if sess.paused is live:  # paused again: the rest still waits
            sess.batch_rest = rest
        elif rest and not sess.should_stop(job):
            k, n = live.batch
            yield from self.series(sess, job, rest, every, first=k + 1, of=n)

    def _check_steer(self, prompt, negative_prompt, lr, preview_every, sess) -> int:
        if sess is None or sess.paused is None:
            why = f" (the paused run was {sess.dropped_reason})" if sess and \
                sess.dropped_reason else ""
            raise InputError("prompt", f"nothing to resume: no run is paused in this session{why}")
        return self.studio.check_steering(sess.paused.current, prompt, negative_prompt, lr,
                                          preview_every)
