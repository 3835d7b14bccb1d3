"""Is the model hub reachable? Asked once per process, answered in about a second.

huggingface_hub (under open_clip and diffusers) retries a download for about half a minute
before it gives up on a machine with no route to the hub. clipforge asks once, with a short
connection attempt, before its first hub access; when the hub cannot be reached it switches
huggingface_hub to its offline mode (as ``HF_HUB_OFFLINE=1`` would), so a model already in
the local cache still loads and any other fails at once, with clipforge's own hint about local
folders. Setting ``HF_HUB_OFFLINE=1`` yourself skips the probe.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

PROBE_SECONDS = 1.5
_TRUE = ("1", "true", "yes", "on")
_lock = threading.Lock()
_reason: list[str | None] = []  # [] = not asked yet; [None] = reachable; [text] = why not


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def offline_reason() -> str | None:
    """Why the hub cannot be used from here (None when it can), probed once per process."""
    with _lock:
        if _reason:
            return _reason[0]
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
            return "HF_HUB_OFFLINE is set"
        if not _reason:
            host, port = _endpoint()
            try:
                socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
                _reason.append(None)
            except OSError as e:
                _reason.append(f"{host} cannot be reached ({type(e).__name__}: {e})")
        return _reason[0]


def before_hub_access() -> str | None:
    """Call before anything may download from the hub; returns :func:`offline_reason`.

    When the hub is unreachable, huggingface_hub is put in offline mode for this process, so
    the call that follows uses the local cache or fails at once instead of retrying.
    """
    reason = offline_reason()
    if reason is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import huggingface_hub.constants as constants

            constants.HF_HUB_OFFLINE = True  # read at import time by huggingface_hub
        except ImportError:
            pass
    return reason


def forget() -> None:
    """Ask again at the next hub access (tests; a machine whose network came up)."""
    with _lock:
        _reason.clear()


__all__ = ["offline_reason", "before_hub_access", "forget", "PROBE_SECONDS"]
