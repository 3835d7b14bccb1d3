"""Rendering items and keeping the output folder's books: render_item, Batch, run_sequential.

:func:`render_item` turns one config into PNG (and GIF, MP4) bytes and never raises for a bad
item: a failure is classified with :mod:`clipforge.errors` (``nonfinite`` for a diverged run,
``failed`` for bad input, ``error`` for anything else: retried by the next run) and comes back as a :class:`Rendered`. It runs in this process
or inside a Ray actor (:mod:`clipforge.batch.ray_backend`). :class:`Batch` decides what to
render, writes results atomically and records them in the manifest; it is the only writer.

Progress goes to an observer (:class:`~clipforge.batch.progress.Progress`; the CLI draws
bars from it); nothing here prints. Torch and the models load only when an item is rendered.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from clipforge.batch.claims import Claims
from clipforge.batch.items import Item
from clipforge.batch.manifest import Manifest, manifest_name, read_manifests, record
from clipforge.batch.progress import Progress, Silent
from clipforge.config import RunConfig
from clipforge.errors import DiskError, NonFiniteLossError, RunError, UsageError
from clipforge.outputs import safe_join


@dataclass
class Rendered:
    """The result of rendering one item: the encoded files, or why there are none."""

    status: str
    seconds: float
    png: bytes | None = None
    frames: dict[str, bytes] | None = None  # progress files by suffix (.gif, .mp4)
    error: str | None = None
    loss: float | None = None  # the last step's loss (None for 0 steps or a failure)


def render_item(cfg: RunConfig, cache, on_step: Callable[[Any], None] | None = None) -> Rendered:
    """Render one config to PNG bytes (and progress GIF / MP4 bytes with ``save_every``);
    never raises for a bad item: a failure becomes
    ``Rendered(status="failed" | "nonfinite" | "error", error=...)`` (``error``: not the item's
    settings' fault, e.g. out of memory; a re-run tries again).

    ``KeyboardInterrupt`` propagates (the caller records the item as interrupted).

    Args:
        cfg: the item's settings (a concrete seed).
        cache: the worker's ModelCache (models load once per worker, not per item).
        on_step: called with every Step (progress display).
    """
    from clipforge.frames import recorder_for
    from clipforge.outputs import png_bytes
    from clipforge.runner import Run

    t0 = time.perf_counter()
    run, ok = None, False
    try:
        run = Run(cfg, cache=cache)
        frames = recorder_for(cfg)
        for step in run:
            if frames is not None:
                frames(step)
            if on_step is not None:
                on_step(step)
        png = png_bytes(run.image(), run.config, options=run.generator_settings())
        files = frames.encoded() if frames is not None else None
        ok = True
        loss = float(run.step.loss) if run.step is not None else None
        return Rendered("ok", time.perf_counter() - t0, png, files, loss=loss)
    except NonFiniteLossError as e:
        return Rendered("nonfinite", time.perf_counter() - t0, error=str(e))
    except UsageError as e:
        return Rendered("failed", time.perf_counter() - t0, error=str(e))
    except RunError as e:  # out of memory and the like: not the item's fault, retried
        return Rendered("error", time.perf_counter() - t0, error=str(e))
    except Exception as e:  # noqa: BLE001 - one bad item never stops the rest
        return Rendered("error", time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
    finally:
        # after a failure, free what the traceback kept alive (a full gc.collect); after a
        # success dropping the Run frees its tensors, and a gc per item would cost more than
        # a small render
        if run is not None and not ok:
            run.release()


@dataclass
class Stats:
    """Counts for the summary line: this run's renders, skips, failures and interruptions."""

    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    failed_earlier: int = 0
    interrupted: int = 0
    recovered: int = 0
    to_render: int = 0
    busy: int = 0  # claimed by another process sharing the folder (it renders them)


class Batch:
    """One batch run over an output folder: the skip decisions, the writes and the manifest.

    Args:
        out: the output folder (it may not exist yet when only planning).
        shard: ``(i, N)``; this process handles the items of shard ``i``.
        retry_failed: render items an earlier run recorded as failed.
    """

    def __init__(self, out: Path, shard: tuple[int, int] = (0, 1), retry_failed: bool = False):
        self.out = out
        self.shard = shard
        self.retry_failed = retry_failed
        self.state = read_manifests(out)
        self.stats = Stats()
        self.manifest: Manifest | None = None
        self.claims = Claims(out)

    def close(self) -> None:
        """Close the manifest (every line is already on disk) and release every claim."""
        self.claims.close()
        if self.manifest is not None:
            self.manifest.close()

    def decide(self, item: Item) -> str:
        """``render``, ``done`` (its PNG exists), ``failed-earlier``, or ``invalid``.

        Only a ``stat`` of the final name: finished outputs are never read back.

        Args:
            item: the item.
        """
        earlier = item.key in self.state.failed and not self.retry_failed
        if item.error is not None:
            return "failed-earlier" if earlier else "invalid"
        if (self.out / item.filename).exists():
            return "done"
        return "failed-earlier" if earlier else "render"

    def pending(self, items: Iterable[Item]) -> Iterator[Item]:
        """Items that need rendering, each claimed (:mod:`~clipforge.batch.claims`) until
        :meth:`finish` or :meth:`interrupted`; the rest are counted (and recorded when
        needed) here. An item another process has claimed is left to it.

        Args:
            items: every item of this shard.
        """
        for item in items:
            what = self.decide(item)
            if what == "render":
                if not self.claims.take(item.key):
                    self.stats.busy += 1
                    continue
                if (self.out / item.filename).exists():  # finished elsewhere meanwhile
                    self.claims.release(item.key)
                    self.stats.skipped += 1
                    continue
                self.stats.to_render += 1
                yield item
            elif what == "done":
                self.stats.skipped += 1
                if item.key not in self.state.ok and self._claimed_unrecorded(item, "ok"):
                    # killed between the rename and the log
                    self._log(record(item, "ok", path=item.filename, recovered=True))
                    self.claims.release(item.key)
                    self.stats.recovered += 1
            elif what == "failed-earlier":
                self.stats.failed_earlier += 1
            else:
                self.stats.failed += 1
                if self._claimed_unrecorded(item, "failed"):
                    self._log(record(item, "failed", error=item.error))
                    self.claims.release(item.key)

    def _claimed_unrecorded(self, item: Item, status: str) -> bool:
        """Claim an item whose line may be missing; True (claim held) when, with the claim
        held, the manifests still lack its ``ok`` line (for ``ok``), or no other process has
        recorded it since our last read (for ``failed``): this process writes it then."""
        if not self.claims.take(item.key):
            return False  # its holder writes the line
        state = self.state.update(self.out)
        if item.key in state.ok if status == "ok" else item.key in state.recent:
            self.claims.release(item.key)
            return False
        return True

    def finish(self, item: Item, result: Rendered) -> None:
        """Write one result's files atomically, then its manifest line.

        Args:
            item: the item.
            result: what rendering it gave.

        Raises:
            DiskError: the output could not be written (the manifest records it if it can).
        """
        try:
            self._finish(item, result)
        finally:
            self.claims.release(item.key)  # after the manifest line: it is on disk now

    def _finish(self, item: Item, result: Rendered) -> None:
        from clipforge import outputs

        if result.status != "ok":
            self.stats.failed += 1
            self._log(record(item, result.status, error=result.error, seconds=result.seconds))
            return
        path = safe_join(self.out, item.filename)
        try:
            if result.frames:
                from clipforge.frames import write_beside

                write_beside(path, result.frames)
            outputs.atomic_write_bytes(path, result.png)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            message = f"cannot write {str(path)!r}: {reason}"
            if e.errno == errno.ENOSPC:
                message += " (disk full: free space and re-run; finished items are kept)"
            with contextlib.suppress(DiskError):
                self._log(record(item, "interrupted", error=message, seconds=result.seconds))
            raise DiskError(message) from e
        self._log(record(item, "ok", path=item.filename, seconds=result.seconds,
                         loss=result.loss))
        self.state.ok.add(item.key)
        self.stats.rendered += 1

    def interrupted(self, item: Item, seconds: float | None = None) -> None:
        """Record an item cut short (Ctrl-C, SIGTERM, a stopped batch): the next run renders it.

        Args:
            item: the item.
            seconds: how long it ran.
        """
        self.stats.interrupted += 1
        with contextlib.suppress(DiskError):
            self._log(record(item, "interrupted", error="interrupted (Ctrl-C or SIGTERM)",
                             seconds=seconds))
        self.claims.release(item.key)

    def _log(self, rec: dict[str, Any]) -> None:
        """Append a manifest line (opening this shard's manifest on the first one)."""
        try:
            if self.manifest is None:
                self.manifest = Manifest(self.out / manifest_name(self.shard))
            self.manifest.write(rec)
        except OSError as e:
            raise DiskError(f"cannot write the manifest in {str(self.out)!r}: {e}") from e


def run_sequential(batch: Batch, items: Iterable[Item], progress: Progress = Silent()) -> None:
    """Render in this process, models loaded once (one ModelCache for every item).

    Args:
        batch: the batch (decisions, writes, manifest).
        items: every item of this shard.
        progress: the observer told about each item and step.
    """
    cache = None
    for item in batch.pending(items):
        if cache is None:  # torch and the models load only when something needs rendering
            from clipforge.guidance.clip_models import ModelCache

            cache = ModelCache()
        progress.start_item(item)
        t0 = time.perf_counter()
        try:
            result = render_item(item.config, cache, progress.step)
        except KeyboardInterrupt:
            batch.interrupted(item, time.perf_counter() - t0)
            raise
        batch.finish(item, result)
        progress.end_item(item, result)


__all__ = ["Rendered", "render_item", "Stats", "Batch", "run_sequential"]
