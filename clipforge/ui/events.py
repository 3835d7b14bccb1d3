"""The studio's small events: claim the page, pause, stop, cancel, the queue place and the rest.

These events are private (not on the API page, refused by gradio's clients), but the page calls
them over HTTP, so anyone who learns a session's hash could send them. Each therefore takes the
page's *owner token*, a secret the server hands to the page when it loads (:meth:`Events.claim`)
and that only that page holds; an event without the right token does nothing
(:meth:`~clipforge.ui.session.Studio.check_owner`). gradio's own ``/cancel`` route is guarded
the same way by :mod:`clipforge.ui.guard`.
"""

from __future__ import annotations

import gradio as gr

from clipforge.ui.controls import (RUN_BUTTONS, generator_info, options_info, page_state,
                                   restore_controls)
from clipforge.ui.handlers import show
from clipforge.ui.inputs import (PAGE_ONLY, RESTORABLE, UI_FIELDS, InputError, batch_count,
                                 random_seed)
from clipforge.ui.jobs import Jobs
from clipforge.ui.session import Session, is_client_id, new_client_id

# the settings a reload brings back (kept in the browser's storage at each Generate)
REMEMBERED = RESTORABLE + PAGE_ONLY
MAX_HISTORY = 20  # prompts kept in the history, newest first
# the settings that change how long a run takes: the estimate is said again when one changes
ESTIMATED = ("clip", "generator", "generator_options", "width", "height", "steps", "cutn",
             "batch_count", "augment", "init_image", "image_prompts")


def closed(sess: Session | None) -> None:
    """A tab went away: stop its job and free its paused run."""
    if sess is not None:
        sess.stop()


class Events(Jobs):
    """Every event of the page: Generate and Resume (:class:`~clipforge.ui.jobs.Jobs`) and the
    small ones.

    Args:
        studio: the shared models, limits and step lock.
        waiting: returns the session hashes of the jobs waiting for the model, in queue order.
    """

    def __init__(self, studio, waiting=lambda: []):
        super().__init__(studio)
        self.waiting = waiting

    def _owned(self, sess: Session | None, owner: str | None, action: str) -> bool:
        try:
            self.studio.check_owner(sess, owner, action, strict=True)
        except InputError as e:
            gr.Warning(str(e))
            return False
        return True

    def opened(self, saved, sess: Session) -> tuple:
        """Page load: hand this page its owner token (only the first caller gets it), enable
        Generate (so the page never sends an event without its token), and bring back what the
        browser had: its settings and its gallery, read back from the output folder.

        Returns:
            owner token, Generate, browser state, gallery, then the :data:`REMEMBERED` values.
        """
        token = sess.claim()
        if not token:
            return tuple(gr.skip() for _ in range(5 + len(REMEMBERED)))
        saved = saved if isinstance(saved, dict) else {}
        client = saved.get("client") if is_client_id(saved.get("client")) else new_client_id()
        sess.adopt(client, self.studio.saved_results(client))
        values = saved.get("values") if isinstance(saved.get("values"), dict) else {}
        history = [p for p in saved.get("history") or [] if isinstance(p, str)][:MAX_HISTORY]
        return (token, gr.update(interactive=True), dict(saved, client=client),
                self.gallery(sess), gr.update(choices=history, value=None),
                *(values.get(n, gr.skip()) for n in REMEMBERED))

    def remember(self, *args) -> tuple:
        """Generate pressed: keep its settings in the browser's storage (for a reload) and its
        prompt at the top of the prompt history."""
        *values, saved, owner, sess = args
        if sess is None or not sess.owns(owner):
            return gr.skip(), gr.skip()
        values = dict(zip(REMEMBERED, values))
        old = saved.get("history") if isinstance(saved, dict) else None
        prompt = values.get("prompt") or ""
        history = list(dict.fromkeys([prompt] * bool(prompt.strip()) + [
            p for p in old or [] if isinstance(p, str)]))[:MAX_HISTORY]
        return ({"client": sess.client, "values": values, "history": history},
                gr.update(choices=history, value=None))

    def estimate(self, *args) -> str:
        """What a run of the page's values will take ("about N s", from measured step times;
        see :mod:`clipforge.ui.timing`); nothing while a value is invalid (the validator says
        why at Generate)."""
        *values, owner, sess = args
        if sess is None or not sess.owns(owner):
            return gr.skip()
        page = dict(zip(UI_FIELDS, values))
        page["prompt"] = page.get("prompt") or "a red circle"  # the time does not depend on it
        try:
            cfg, _ = self.studio.config_from_values(page)
            return self.studio.timings.text(cfg, batch_count(self.studio, page, cfg))
        except InputError:
            return ""

    def pick_history(self, prompt):
        """A prompt picked from the history goes back into the prompt box."""
        return prompt if isinstance(prompt, str) and prompt else gr.skip()

    def pause(self, owner: str, sess: Session):
        """Ask ``sess``'s running job to pause at its next step (it writes "paused" itself)."""
        if not self._owned(sess, owner, "pause"):
            return gr.skip()
        # only the button: a second writer of the status could land after the job's own
        # "paused" and leave a stale "pausing" on the page
        sess.pause_requested.set()
        return gr.update(interactive=False)

    def stop(self, owner: str, sess: Session) -> tuple:
        """Stop ``sess``'s running job (it saves its image as a partial result itself), or save
        and free its paused run."""
        if not self._owned(sess, owner, "stop"):
            return show()
        live = sess.take_paused()
        if live is None:
            sess.stop()
            return show(stop=gr.update(interactive=False))
        try:
            return self.keep(live, sess, stopped=True)
        finally:
            live.release()

    def cancel(self, owner: str, sess: Session) -> tuple:
        """The job left the queue (``cancels=`` removed it): say so; the page goes idle."""
        if not self._owned(sess, owner, "cancel"):
            return show()
        return show(status="cancelled: the job left the queue", message="", state="idle")

    def queue_place(self, owner: str, sess: Session, request: gr.Request) -> tuple:
        """Ticks: while this page's job waits for the model, "queued: place k of n" and Cancel.

        Returns:
            updates of the status and the run buttons only (a tick that touched the settings
            would clear a validation message shown on one of them).
        """
        quiet = tuple(gr.skip() for _ in range(1 + len(RUN_BUTTONS)))
        if sess is None or not sess.owns(owner):
            return quiet
        hashes = self.waiting()
        me = getattr(request, "session_hash", None)
        if me is None or me not in hashes:
            if sess.queued_before is None:
                return quiet
            # this tick said "queued" before: if that job never began, it left the queue (a
            # tick racing Cancel could otherwise leave a stale "queued" on the page)
            began, sess.queued_before = sess.job != sess.queued_before, None
            return quiet if began else ("cancelled: the job left the queue",
                                        *page_state("idle")[:len(RUN_BUTTONS)])
        sess.queued_before = sess.job  # the id of the job before the waiting one
        k, n = hashes.index(me) + 1, len(hashes)
        return (f"queued: place {k} of {n} · one job uses the model at a time",
                *page_state("queued")[:len(RUN_BUTTONS)])

    def randomize(self, owner: str, sess: Session):
        """A fresh seed for the seed box."""
        return random_seed() if self._owned(sess, owner, "draw a seed") else gr.skip()

    def last_seed(self, owner: str, sess: Session):
        """The seed of this session's latest job (a drawn one when the seed was -1)."""
        ok = self._owned(sess, owner, "reuse the seed") and sess.last_seed is not None
        return sess.last_seed if ok else gr.skip()

    def generator_changed(self, name: str) -> tuple:
        """The help of the generator dropdown and of its options box, for generator ``name``."""
        return gr.update(info=generator_info(name)), gr.update(info=options_info(name))

    def restore(self, file, owner: str, sess: Session) -> list:
        """The :data:`~clipforge.ui.inputs.RESTORABLE` settings of ``file``, a dropped PNG."""
        if not self._owned(sess, owner, "restore settings"):
            return [gr.skip() for _ in RESTORABLE] + [gr.skip()]
        return restore_controls(file, RESTORABLE)
