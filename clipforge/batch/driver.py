"""The batch driver: check a whole batch before any work, then plan it or run it.

:func:`prepare` takes already-parsed arguments (the shared settings as a partial
``merge(...)`` dict, the seeds, the shard) and raises a :class:`~clipforge.errors.UsageError`
for anything that would make the whole batch fail (a list that cannot be used, a bad shared
setting, a missing ``ray``), so a front end can exit 2 before anything starts. The
:class:`Job` it returns lists what a run would do (:meth:`Job.plan`, no model loaded) or does
it (:meth:`Job.start` then :meth:`Job.run`). Nothing here prints or maps errors to exit codes:
the CLI (``clipforge batch``) does.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from clipforge.batch.items import Item, check_shared, iter_items
from clipforge.batch.lists import Row, read_rows
from clipforge.batch.manifest import manifest_name, sweep_shard_temp_files
from clipforge.batch.progress import Progress, Silent
from clipforge.batch.runner import Batch, Stats, run_sequential
from clipforge.errors import ConfigError, DiskError
from clipforge.targets import check_folder


@dataclass
class Job:
    """A checked batch: its items (streamed, read once), output folder, shard and backend.

    Build it with :func:`prepare`. ``batch`` (the folder's books, with ``stats``) exists once
    :meth:`start` has run.
    """

    items: Iterator[Item]
    out: Path
    shard: tuple[int, int] = (0, 1)
    retry_failed: bool = False
    ray: str | None = None
    workers: int | None = None
    use_gpus: bool = True
    batch: Batch | None = None

    @property
    def manifest(self) -> Path:
        """This shard's manifest file."""
        return self.out / manifest_name(self.shard)

    @property
    def stats(self) -> Stats:
        """This run's counts (all zero before :meth:`start`)."""
        return self.batch.stats if self.batch is not None else Stats()

    def plan(self) -> Iterator[tuple[str, Item, str]]:
        """What a run would do, item by item, without loading any model or creating the folder.

        Yields:
            ``(what, item, detail)``: ``what`` is ``render``, ``done``, ``failed-earlier`` or
            ``invalid``; ``detail`` is the earlier or present error ("" when none).
        """
        books = Batch(self.out, self.shard, self.retry_failed) if self.out.is_dir() else None
        for item in self.items:
            if books is not None:
                what = books.decide(item)
            else:  # nothing rendered yet: no stat per item
                what = "invalid" if item.error is not None else "render"
            detail = (books.state.failed.get(item.key, "") if what == "failed-earlier"
                      else item.error or "")
            yield what, item, detail

    def start(self) -> int:
        """Create the output folder and sweep this shard's stale temp files; returns how many.

        Raises:
            DiskError: the folder cannot be created.
        """
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiskError(f"cannot create the output folder {str(self.out)!r}: "
                            f"{e.strerror}") from None
        self.out = self.out.resolve()
        self.batch = Batch(self.out, self.shard, self.retry_failed)
        return sweep_shard_temp_files(self.out, self.shard, self.batch.claims)

    def run(self, progress: Progress = Silent()) -> Stats:
        """Render every pending item (sequentially or on Ray), writing and recording each.

        Args:
            progress: the observer told about notes, items and steps.

        Raises:
            KeyboardInterrupt: stopped (the item in progress is recorded as interrupted).
            DiskError: an output or the manifest could not be written; the batch stopped.
        """
        if self.batch is None:
            self.start()
        try:
            if self.ray is not None:
                from clipforge.batch.ray_backend import run_ray

                run_ray(self.batch, self.items, progress, self.ray, self.workers,
                        use_gpus=self.use_gpus)
            else:
                run_sequential(self.batch, self.items, progress)
        finally:
            self.batch.close()
        return self.batch.stats


def prepare(list_path: str | os.PathLike, out: str | os.PathLike,
            settings: Mapping[str, Any] | None = None, seeds: list[int] | None = None,
            shard: tuple[int, int] = (0, 1), *, ray: str | None = None,
            workers: int | None = None, retry_failed: bool = False,
            plan: bool = False) -> Job:
    """Check a batch before any work starts and return it as a :class:`Job`.

    Args:
        list_path: the prompt list (.txt, .csv, .jsonl).
        out: the output folder (created by :meth:`Job.start`).
        settings: shared settings of every item, a partial ``merge(...)`` dict (no prompt).
        seeds: seeds of every row that sets none (None or empty: the shared seed).
        shard: ``(i, N)``: render only shard ``i`` of ``N``.
        ray: ``auto`` or a Ray cluster address to render on; None renders here.
        workers: Ray actors (default: one per GPU, else per CPU slot).
        retry_failed: render again items an earlier run recorded as failed.
        plan: only to be planned: the shared settings are checked without torch (no device,
            generator or CLIP check).

    Raises:
        UsageError: the list, a shared setting, the seeds or the backend cannot be used.
    """
    settings, seeds, out = dict(settings or {}), list(seeds or []), Path(out)
    if workers is not None and workers < 1:
        raise ConfigError("workers", f"{workers} is out of range; allowed: >= 1")
    if ray is not None and importlib.util.find_spec("ray") is None:
        raise ConfigError("ray", "the Ray backend needs the ray package; run: pip install "
                          "'clipforge[ray]'")
    if not seeds and settings.get("seed") == -1:
        raise ConfigError("seed", "-1 (random) cannot be used in a batch: every item needs "
                          "a fixed seed so that a re-run finds it; use --seeds")
    check_folder(out)  # not a folder, a name too long, not writable: before any work
    rows = read_rows(list_path)
    first = next(rows, None)  # header and format errors surface here, before any work
    if first is None:
        raise ConfigError("list", f"{Path(list_path).name!r} has no prompts (empty, or only "
                          "blank and # comment lines)")
    check_shared(settings, first, inputs=not plan)

    def all_rows() -> Iterator[Row]:
        yield first
        yield from rows

    items = iter_items(all_rows(), settings, seeds, shard)
    return Job(items, out, shard, retry_failed, ray, workers,
               use_gpus=settings.get("device") != "cpu")


__all__ = ["Job", "prepare"]
