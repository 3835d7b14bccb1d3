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

from clipforge.ui.controls import generator_info, options_info, restore_controls
from clipforge.ui.handlers import Handlers, show
from clipforge.ui.inputs import RESTORABLE, InputError, random_seed
from clipforge.ui.session import Session


def closed(sess: Session | None) -> None:
    """A tab went away: stop its job and free its paused run."""
    if sess is not None:
        sess.stop()


class Events(Handlers):
    """Every event of the page: Generate and Resume (:class:`Handlers`) and the small ones.

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

    def claim(self, sess: Session) -> tuple:
        """Page load: hand this page its owner token (only the first caller gets it) and enable
        Generate, so the page never sends an event without its token."""
        token = sess.claim()
        return (token, gr.update(interactive=True)) if token else (gr.skip(), gr.skip())

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
        """Ticks: while this page's job waits for the model, "queued: place k of n" and Cancel."""
        if sess is None or not sess.owns(owner):
            return show()
        hashes = self.waiting()
        me = getattr(request, "session_hash", None)
        if me is None or me not in hashes:
            return show()
        k, n = hashes.index(me) + 1, len(hashes)
        return show(status=f"queued: place {k} of {n} · one job uses the model at a time",
                    message="", state="queued")

    def randomize(self, owner: str, sess: Session):
        """A fresh seed for the seed box."""
        return random_seed() if self._owned(sess, owner, "draw a seed") else gr.skip()

    def generator_changed(self, name: str) -> tuple:
        """The help of the generator dropdown and of its options box, for generator ``name``."""
        return gr.update(info=generator_info(name)), gr.update(info=options_info(name))

    def restore(self, file, owner: str, sess: Session) -> list:
        """The :data:`~clipforge.ui.inputs.RESTORABLE` settings of ``file``, a dropped PNG."""
        if not self._owned(sess, owner, "restore settings"):
            return [gr.skip() for _ in RESTORABLE] + [gr.skip()]
        return restore_controls(file, RESTORABLE)
