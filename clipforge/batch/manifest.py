"""The manifest: an append-only JSON-lines log of every item's outcome, one fsynced line each.

A re-run reads every ``manifest*.jsonl`` of the output folder to learn what is finished and
what failed; lines torn by ``kill -9`` or a full disk are ignored. Each shard writes its own
file (``manifest.shard-I-of-N.jsonl``): appends from several hosts to one file on NFS or
Lustre can interleave.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforge.batch.items import Item, settings_hash
from clipforge.config import METADATA_PROMPT_CHARS
from clipforge.outputs import TMP_SUFFIX

MANIFEST = "manifest.jsonl"
# ``failed`` / ``nonfinite``: the item's own settings are at fault, a re-run skips it (unless
# --retry-failed); ``error``: it failed for another reason (out of memory, a dead worker, a
# bug), so, like ``interrupted``, a re-run renders it again.
STATUSES = ("ok", "failed", "nonfinite", "error", "interrupted")


def manifest_name(shard: tuple[int, int]) -> str:
    """``manifest.jsonl``, or ``manifest.shard-I-of-N.jsonl`` for shard I of N > 1.

    Args:
        shard: ``(i, N)``.
    """
    i, n = shard
    return MANIFEST if n == 1 else f"manifest.shard-{i}-of-{n}.jsonl"


@dataclass
class ManifestState:
    """What the manifests record: finished ids and the last error of failed ones.

    :meth:`update` reads only what was appended since its last call (other processes may be
    writing to the same folder), so keeping up with them costs each line once.
    """

    ok: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    recent: set[str] = field(default_factory=set)  # ids of lines read by the last update

    def update(self, folder: str | os.PathLike) -> "ManifestState":
        """Read the complete lines appended to every ``manifest*.jsonl`` since the last call.

        The last line about an id wins: ``ok`` marks it finished, ``failed`` / ``nonfinite``
        mark it failed, ``error`` and ``interrupted`` clear a failure (rendered again). Torn
        lines (``kill -9``, a full disk) are ignored.

        Args:
            folder: the batch's output folder.
        """
        self.recent = set()
        for path in sorted(Path(folder).glob("manifest*.jsonl")):
            start = self.offsets.get(str(path), 0)
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
            end = data.rfind(b"\n") + 1  # an unfinished last line is read next time
            self.offsets[str(path)] = start + end
            for raw in data[:end].splitlines():
                self._line(raw)
        return self

    def _line(self, raw: bytes) -> None:
        try:
            rec = json.loads(raw)
            key, status = rec["id"], rec["status"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return  # a line torn by kill -9 or a full disk
        if not isinstance(key, str):
            return
        self.recent.add(key)
        if status == "ok":
            self.ok.add(key)
            self.failed.pop(key, None)
        elif status in ("failed", "nonfinite"):
            self.ok.discard(key)
            self.failed[key] = str(rec.get("error") or status)
        else:
            self.failed.pop(key, None)


def read_manifests(folder: str | os.PathLike) -> ManifestState:
    """Read every ``manifest*.jsonl`` in ``folder`` (see :meth:`ManifestState.update`).

    Args:
        folder: the batch's output folder.
    """
    return ManifestState().update(folder)


class Manifest:
    """An append-only JSON-lines log; every line is written with one ``write`` and fsynced.

    Args:
        path: the manifest file (created if missing; a torn last line is ended first).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a line torn by kill -9: end it so ours parse
                    os.write(self.fd, b"\n")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable before returning.

        Args:
            record: a JSON-able dict (see :func:`record`).
        """
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        data = line.encode("utf-8", "backslashreplace")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the file (every line is already on disk)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def record(item: Item, status: str, *, error: str | None = None, seconds: float | None = None,
           path: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest line of one item.

    Args:
        item: the item.
        status: one of STATUSES.
        error: why it failed or was interrupted.
        seconds: how long it took.
        path: its PNG's name in the output folder.
        extra: more fields (``recovered=True`` for a PNG found without its line).
    """
    cfg = item.config
    rec = {
        "id": item.key,
        "row": item.row,
        "line": item.line,
        "label": item.label,
        "prompt": cfg.prompt[:METADATA_PROMPT_CHARS] if cfg is not None else None,
        "seed": item.seed,
        "settings": settings_hash(cfg) if cfg is not None else None,
        "status": status,
        "error": error,
        "path": path,
        "seconds": round(seconds, 3) if seconds is not None else None,
    }
    rec.update(extra)
    return rec


def sweep_shard_temp_files(folder: Path, shard: tuple[int, int], claims=None) -> int:
    """Delete temp files a killed writer left, only those of items of this shard, and never
    those of an item another process has claimed (it is writing them now); with ``claims``,
    also the lock files their killed holders left.

    Temp names start with ``.ROW-slug-sSEED-hash.png.``, so the item and its shard can be
    read from them; other shards may be writing beside us right now.

    Args:
        folder: the output folder.
        shard: ``(i, N)``.
        claims: this process's :class:`~clipforge.batch.claims.Claims` in ``folder``.

    Returns:
        how many files were deleted.
    """
    from clipforge.batch.claims import LOCK_SUFFIX

    i, n = shard
    pattern = re.compile(r"^\.((\d+)-.*-s(\d+)-[0-9a-f]{8})\.(?:png|gif)\.")
    swept = 0
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        m = pattern.match(p.name)
        if n > 1 and (m is None or (int(m.group(2)) + int(m.group(3))) % n != i):
            continue
        if m is not None and claims is not None and claims.held_elsewhere(m.group(1)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            swept += 1
    for p in folder.glob(f".*{LOCK_SUFFIX}") if claims is not None else ():
        claims.held_elsewhere(p.name[1:-len(LOCK_SUFFIX)])  # removes it when nobody holds it
    return swept


__all__ = ["MANIFEST", "STATUSES", "manifest_name", "ManifestState", "read_manifests",
           "Manifest", "record", "sweep_shard_temp_files"]
