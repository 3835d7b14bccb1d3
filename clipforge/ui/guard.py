"""Who owns a queued job: an ASGI middleware that lets only a job's owner cancel it through
gradio's ``/cancel`` route, and what the queue says about a session's jobs.

gradio's ``POST /gradio_api/cancel`` cancels the running task of ``session_hash`` and
``fn_index`` whatever ``event_id`` it is sent, so anyone who learns a session's hash can stop
that user's job. The owner of a job is whoever queued it: gradio's queue answers the join with
a random event id and tells it to no one else. :class:`OwnedCancel` refuses a cancel (403)
whose event id is not one of that session's pending events. Nothing here imports gradio.
"""

from __future__ import annotations

import json
from typing import Callable

CANCEL_SUFFIX = "/cancel"
CONCURRENCY_ID = "clipforge-model"  # every event that touches the model shares this id


def waiting(demo) -> list[str]:
    """Session hashes of the jobs waiting for the model, first in line first."""
    queue = getattr(demo, "_queue", None)
    line = queue.event_queue_per_concurrency_id.get(CONCURRENCY_ID) if queue else None
    return [e.session_hash for e in (line.queue if line else []) if e.session_hash]


def owns_event(demo, session_hash: str, event_id: str) -> bool:
    """True when ``event_id`` is a queued or running event of ``session_hash`` (gradio hands an
    event's id only to whoever queued it)."""
    queue = getattr(demo, "_queue", None)
    if queue is None:
        return False
    event = queue.event_ids_to_events.get(event_id)
    return (event is not None and event.session_hash == session_hash) or \
        event_id in queue.pending_event_ids_session.get(session_hash, ())


class OwnedCancel:
    """Pass every request on, except a ``/cancel`` that names no pending event of its session.

    Args:
        app: the ASGI app it wraps.
        owned: ``owned(session_hash, event_id)`` -> True when that event is one of the
            session's queued or running events.
    """

    def __init__(self, app, owned: Callable[[str, str], bool]):
        self.app, self.owned = app, owned

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").endswith(CANCEL_SUFFIX):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not self._allowed(body):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(
                {"detail": "only the page that queued a job can cancel it"}).encode()})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _allowed(self, body: bytes) -> bool:
        try:
            data = json.loads(body or b"{}")
            session_hash, event_id = data.get("session_hash"), data.get("event_id")
        except (ValueError, AttributeError):
            return False
        if not isinstance(session_hash, str) or not isinstance(event_id, str):
            return False
        return bool(self.owned(session_hash, event_id))
