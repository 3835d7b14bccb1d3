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
    """What earlier runs recorded: finished ids and the last error of failed ones."""

    ok: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


def read_manifests(folder: str | os.PathLike) -> ManifestState:
    """Read every ``manifest*.jsonl`` in ``folder`` (line by line; torn lines are ignored).

    The last line about an id wins: ``ok`` marks it finished, ``failed`` / ``nonfinite`` mark
    it failed, ``error`` and ``interrupted`` clear a failure (the item is rendered again).

    Args:
        folder: the batch's output folder.
    """
    state = ManifestState()
    for path in sorted(Path(folder).glob("manifest*.jsonl")):
        with open(path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                    key, status = rec["id"], rec["status"]
                except (ValueError, KeyError, TypeError, RecursionError):
                    continue  # a line torn by kill -9 or a full disk
                if not isinstance(key, str):
                    continue
                if status == "ok":
                    state.ok.add(key)
                    state.failed.pop(key, None)
                elif status in ("failed", "nonfinite"):
                    state.ok.discard(key)
                    state.failed[key] = str(rec.get("error") or status)
                else:
                    state.failed.pop(key, None)
    return state


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


def sweep_shard_temp_files(folder: Path, shard: tuple[int, int]) -> int:
    """Delete temp files a killed writer left, only those of items of this shard.

    Temp names start with ``.ROW-slug-sSEED-hash.png.``, so the shard can be read from them;
    other shards may be writing beside us right now.

    Args:
        folder: the output folder.
        shard: ``(i, N)``.

    Returns:
        how many files were deleted.
    """
    i, n = shard
    pattern = re.compile(r"^\.(\d+)-.*-s(\d+)-[0-9a-f]{8}\.png\.")
    swept = 0
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        m = pattern.match(p.name)
        if n > 1 and (m is None or (int(m.group(1)) + int(m.group(2))) % n != i):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            swept += 1
    return swept


__all__ = ["MANIFEST", "STATUSES", "manifest_name", "ManifestState", "read_manifests",
           "Manifest", "record", "sweep_shard_temp_files"]
