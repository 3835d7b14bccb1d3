"""The studio's state: :class:`Studio` (one per server) and :class:`Session` (one per browser tab).

- :class:`Studio` holds what every session shares: the
  :class:`~clipforge.guidance.clip_models.ModelCache` (models are loaded once for everyone), the
  device, the limits of a shared GPU, the output folder and one lock around every step, so only
  one run touches the model at a time.
- :class:`Session` holds one tab's paused run, results and stop/pause requests, and the
  tab's *owner token* (handed to the page when it loads; events without it are refused). A
  ``gr.State(Session())`` deep-copies a fresh one per tab, so nothing leaks between users.

Nothing here imports gradio; :mod:`clipforge.ui.handlers` drives these from the page.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Sequence

from clipforge.config import MAX_STEPS, MIN_SIDE, RunConfig
from clipforge.errors import ConfigError
from clipforge.ui import inputs
from clipforge.ui.live import LiveRun, Result
from clipforge.ui.timing import Timings

MAX_RESULTS_PER_SESSION = 64


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
        max_cutn: most cutouts per step.
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
                 max_side: int = 1024, max_steps: int = 10_000, max_cutn: int = 64,
                 output_dir: str | Path | None = None, allow_pretrained: bool = True,
                 min_preview_seconds: float = 0.25, max_paused: int = 4, cache=None):
        import tempfile

        from clipforge.guidance.clip_models import ModelCache
        from clipforge.runner import resolve_device

        self.default_clip = ((default_clip,) if isinstance(default_clip, str)
                             else tuple(default_clip))
        choices = list(self.default_clip) + [c for c in (clip_choices or ()) if c]
        self.clip_choices = tuple(dict.fromkeys(choices + bundled_present()))
        self.device = resolve_device(device)
        if not (MIN_SIDE <= max_side) or not (1 <= max_steps <= MAX_STEPS):
            raise ConfigError("max_side", f"max_side must be >= {MIN_SIDE} and max_steps in "
                              f"1..{MAX_STEPS}")
        self.max_side, self.max_steps, self.max_cutn = int(max_side), int(max_steps), int(max_cutn)
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
        self.timings = Timings()  # measured seconds per step: the page's "about N s"

    def config_from_values(self, values: dict[str, Any]) -> tuple[RunConfig, int]:
        """The RunConfig and preview interval of the page's values, within this studio's limits.

        See :func:`clipforge.ui.inputs.config_from_values` (raises its InputError).
        """
        return inputs.config_from_values(self, values)

    def check_owner(self, session: "Session | None", token: Any, action: str,
                    strict: bool = False) -> None:
        """Refuse an event that does not come from the page owning ``session``.

        Args:
            session: the event's Session; token: the owner token the request carried;
            action: what was asked (named in the message);
            strict: refuse a session that no page claimed too (the private events: only a
                page sends them); otherwise such a session is an API client's, and allowed.

        Raises:
            InputError: the token does not match.
        """
        if session is None or (session.owner is None and not strict) or session.owns(token):
            return
        raise inputs.InputError("prompt", f"{action}: refused, this request does not come "
                                "from the page that owns this session")

    def check_steering(self, base: RunConfig, prompt: Any, negative_prompt: Any, lr: Any,
                       preview_every: Any) -> int:
        """Check the steering of a paused run; returns the preview interval.

        See :func:`clipforge.ui.inputs.check_steering` (raises its InputError).
        """
        return inputs.check_steering(base, prompt, negative_prompt, lr, preview_every)

    def hold_paused(self, session: "Session", live: LiveRun) -> None:
        """Park ``live`` in ``session``; beyond ``max_paused`` the oldest paused run is freed.

        Args:
            session: the tab whose run paused; live: its run, kept for Resume.
        """
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
        """A new job id (counted, so tests can see that a refused input took no job)."""
        with self._count_lock:
            self.jobs_started += 1
            return self.jobs_started

    def result_path(self, session: "Session", seed: int, partial: bool = False) -> Path:
        """A fresh PNG path in the output folder; no part of it comes from user text.

        Args:
            session: the tab the result belongs to; seed: the run's seed (in the name);
            partial: a stopped run's image (``-partial`` ends the name).
        """
        from clipforge.outputs import safe_join

        n, stamp = session.next_result_number(), time.time_ns()
        tail = "-partial" if partial else ""
        return safe_join(self.output_dir,
                         f"clipforge-{session.client}-{stamp:016x}-{n:04d}-s{seed}{tail}.png")

    def saved_results(self, client: str) -> list[Result]:
        """The results of browser ``client`` in the output folder, oldest first (a reload's
        gallery); an id that is not :func:`is_client_id` has none."""
        from clipforge.outputs import read_config

        if not is_client_id(client):
            return []
        results = []
        for path in sorted(self.output_dir.glob(f"clipforge-{client}-*.png"))[
                -MAX_RESULTS_PER_SESSION:]:
            try:
                cfg = read_config(path)
            except ConfigError:  # no clipforge settings, or unreadable
                continue
            results.append(Result(path, f"{cfg.prompt[:60]} · seed {cfg.seed}"
                                  + (" · partial" if path.stem.endswith("-partial") else "")))
        return results


def new_client_id() -> str:
    """A browser's id: names its result files, so a reload finds them (16 hex digits)."""
    return uuid.uuid4().hex[:16]


def is_client_id(text: Any) -> bool:
    """True for an id made by :func:`new_client_id` (so it is safe in a file name)."""
    return isinstance(text, str) and len(text) == 16 and all(c in "0123456789abcdef"
                                                            for c in text)


def bundled_present() -> list[str]:
    """Names of the bundled CLIP models whose files are installed."""
    from clipforge import pretrained

    return [name for name in pretrained.names("clip") if pretrained.BUNDLED[name].present]


class Session:
    """One browser tab's state: its paused run, its results and its stop/pause requests.

    ``__deepcopy__`` returns a fresh, empty Session, so the default of a ``gr.State`` is never
    shared between users.
    """

    def __init__(self) -> None:
        self.id = new_client_id()
        self.client = self.id   # the browser's id (kept in its storage): names result files
        self.paused: LiveRun | None = None
        self.batch_rest: list[RunConfig] = []  # the images a paused batch makes after Resume
        self.results: list[Result] = []
        self.pause_requested = threading.Event()
        self.job = 0            # id of this session's latest job; an older one stops
        self.stopped_job = 0    # Stop pressed for jobs up to this id
        self.dropped_reason = ""  # why a paused run was freed (said on Resume)
        self.last_seed: int | None = None  # the seed of the latest job (drawn if it was -1)
        self.queued_before: int | None = None  # job id when a tick last said "queued"
        self.owner: str | None = None  # the owner token of the page that claimed this session
        self._lock = threading.Lock()
        self._n = 0

    def __deepcopy__(self, memo) -> "Session":
        return Session()

    def claim(self) -> str | None:
        """A new owner token for the page that loads this session first; None afterwards."""
        with self._lock:
            if self.owner is not None:
                return None
            self.owner = secrets.token_urlsafe(24)
            return self.owner

    def adopt(self, client: str, results: list[Result]) -> None:
        """This tab belongs to browser ``client``: its results so far fill the gallery."""
        with self._lock:
            self.client = client
            self.results = list(results)

    def owns(self, token: Any) -> bool:
        """True when ``token`` is this session's owner token (compared in constant time)."""
        return (self.owner is not None and isinstance(token, str)
                and hmac.compare_digest(token.encode(), self.owner.encode()))

    def next_result_number(self) -> int:
        """1, 2, 3, ... for this session's result file names."""
        with self._lock:
            self._n += 1
            return self._n

    def begin(self, job: int) -> None:
        """Job ``job`` of this session starts: an older job stops at its next step, requests
        clear."""
        with self._lock:
            self.job = job
            self.pause_requested.clear()

    def should_stop(self, job: int) -> bool:
        """True when job ``job`` was superseded by a newer job or stopped."""
        return self.job != job or self.stopped_job >= job

    def stop(self) -> None:
        """Stop the running job at its next step (it saves its image as a partial result) and
        free a paused run."""
        with self._lock:
            self.stopped_job = self.job
        self.drop_paused()

    def take_paused(self) -> LiveRun | None:
        """The paused run, now no longer held by this session (None when none is)."""
        with self._lock:
            paused, self.paused, self.batch_rest = self.paused, None, []
        return paused

    def drop_paused(self, reason: str = "") -> None:
        """Free the paused run, if any; ``reason`` (why) is said when Resume finds none."""
        with self._lock:
            paused, self.paused, self.batch_rest = self.paused, None, []
            self.dropped_reason = reason if paused is not None else self.dropped_reason
        if paused is not None:
            paused.release()

    def add_result(self, result: Result) -> None:
        """Keep ``result``, a finished image (the latest MAX_RESULTS_PER_SESSION are kept)."""
        with self._lock:
            self.results.append(result)
            del self.results[:-MAX_RESULTS_PER_SESSION]

    def gallery(self) -> list[tuple[str, str]]:
        """(path, caption) of the results, newest first, for the gallery."""
        with self._lock:
            return [(str(r.path), r.caption) for r in reversed(self.results)]
