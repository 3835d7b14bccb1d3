"""Batch rendering of prompt lists that never loses work and never redoes it.

``clipforge batch LIST --out DIR`` renders every row of a prompt list (``.txt``, ``.csv`` or
``.jsonl``, streamed line by line) times every seed of ``--seeds``. Each item gets a
deterministic file name (row index, ASCII slug, seed, short hash of its settings), is written
atomically and recorded in an append-only ``manifest.jsonl`` (one fsynced JSON line per
result). A re-run sweeps stale temp files, skips every item whose PNG exists, retries failed
items only with ``--retry-failed`` and renders the rest. Work is split by ``--shard i/N``
(Slurm job arrays, one manifest per shard) or run on a Ray cluster (``--ray``), one actor per
GPU or CPU slot, each loading its models once.

Exit codes: 0 all rendered, 1 some item failed (or the disk filled up), 2 bad usage or a bad
list caught before starting, 130 interrupted (Ctrl-C or SIGTERM).

Nothing heavy is imported here: ``clipforge.cli`` imports this module at start-up.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import inspect
import json
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import typer

from clipforge.config import METADATA_PROMPT_CHARS, ConfigError, MAX_SEED, RunConfig, parse_size
from clipforge.outputs import TMP_SUFFIX, safe_join, slugify

MANIFEST = "manifest.jsonl"
STATUSES = ("ok", "failed", "nonfinite", "interrupted")
MAX_ITEMS_PER_ROW = 100_000  # --seeds expands every row; more than this is surely a typo
SLUG_CHARS = 32  # keeps names (and the temp names derived from them) well under 100 bytes
_ROW_KEYS = ("id", "size")  # list columns that are not RunConfig fields


# ---------------------------------------------------------------------------------------------
# reading prompt lists


@dataclass(frozen=True)
class Row:
    """One prompt row of a list.

    Attributes:
        index: 0-based position among the list's prompt rows (comments and blanks not counted).
        line: 1-based line number where the row starts in the file.
        values: the row's settings (``prompt``, RunConfig fields, ``id``, ``size``); None when
            the line could not be read.
        error: why the line could not be read (invalid UTF-8, bad JSON, wrong field count).
    """

    index: int
    line: int
    values: dict[str, Any] | None
    error: str | None = None


def read_rows(path: str | os.PathLike) -> Iterator[Row]:
    """Stream the rows of a ``.txt``, ``.csv`` or ``.jsonl`` prompt list in constant memory.

    A line that cannot be read becomes a Row with ``error`` set (that item fails, the rest go
    on); a list that cannot be used at all (missing file, unknown format, a CSV without a
    ``prompt`` column or with unknown columns) raises :class:`ConfigError` on the first
    ``next()``, before any work starts.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("list", f"{str(p)!r} does not exist or is not a file")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return _read_txt(p)
    if suffix == ".csv":
        return _read_csv(p)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    raise ConfigError("list", f"{p.name!r}: unknown list format {suffix or '(none)'!r}; "
                      "expected .txt (a prompt a line), .csv (a prompt column) or .jsonl")


def _decode(raw: bytes, lineno: int) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, (f"line {lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                      f"{e.start + 1}); save the list as UTF-8")


def _decoded_lines(p: Path) -> Iterator[tuple[int, bytes, str | None, str | None]]:
    """(line number, raw bytes, text or None, error or None) for every line, streamed; a UTF-8
    byte-order mark on the first line is dropped. Shared by the line-based list formats."""
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            yield (lineno, raw, *_decode(raw, lineno))


def _read_txt(p: Path) -> Iterator[Row]:
    index = 0
    for lineno, raw, text, error in _decoded_lines(p):
        if text is not None:
            text = text.strip()
            if not text or text.startswith("#"):
                continue
        elif not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        yield Row(index, lineno, None if error else {"prompt": text}, error)
        index += 1


def _allowed_columns() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)] + list(_ROW_KEYS)


def _read_csv(p: Path) -> Iterator[Row]:
    allowed = _allowed_columns()
    with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise ConfigError("list", f"{p.name!r} is empty: expected a header row with a "
                              "'prompt' column")
        columns = [c.strip().lstrip("\ufeff").strip().lower() for c in header]
        if any(_has_surrogate(c) for c in columns):
            raise ConfigError("list", f"{p.name!r}: the header row is not valid UTF-8")
        if "prompt" not in columns:
            raise ConfigError("list", f"{p.name!r} has no 'prompt' column (columns: "
                              f"{', '.join(columns)}); the first row must name the columns, "
                              "e.g. prompt,seed,steps")
        unknown = [c for c in columns if c not in allowed]
        if unknown:
            raise ConfigError("list", f"{p.name!r}: unknown column {unknown[0]!r}; allowed: "
                              f"{', '.join(allowed)}")
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ConfigError("list", f"{p.name!r}: column {dupes[0]!r} appears twice")
        index, end = 0, reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line, end = end + 1, reader.line_num
                yield Row(index, line, None, f"line {line}: not valid CSV ({e})")
                index += 1
                continue
            line, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if any(_has_surrogate(c) for c in cells):
                yield Row(index, line, None, f"line {line}: not valid UTF-8; save the list "
                                             "as UTF-8")
            elif len(cells) != len(columns):
                yield Row(index, line, None, f"line {line}: {len(cells)} fields, the header "
                                             f"has {len(columns)}")
            else:
                values = {c: v.strip() if c != "prompt" else v
                          for c, v in zip(columns, cells) if v.strip()}
                yield Row(index, line, values)
            index += 1


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read_jsonl(p: Path) -> Iterator[Row]:
    index = 0
    for lineno, raw, text, error in _decoded_lines(p):
        if not raw.strip():
            continue
        values = None
        if text is not None:
            try:
                values = json.loads(text)
            except json.JSONDecodeError as e:
                error = f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
            else:
                if isinstance(values, str):
                    values = {"prompt": values}
                elif not isinstance(values, dict):
                    error, values = (f"line {lineno}: expected a JSON object of settings, "
                                     f"got {type(values).__name__}"), None
        yield Row(index, lineno, values, error)
        index += 1


# ---------------------------------------------------------------------------------------------
# items: a row times a seed, with its settings, name and shard


@dataclass(frozen=True)
class Item:
    """One image to render (or one unreadable row to report).

    Attributes:
        row: the row's index in the list.
        line: the row's line number.
        key: unique, deterministic id: the output file name without ``.png``.
        config: the full settings; None when the row is invalid.
        label: the row's own ``id`` column, if any.
        error: why the row is invalid.
    """

    row: int
    line: int
    key: str
    config: RunConfig | None = None
    label: str | None = None
    error: str | None = None

    @property
    def filename(self) -> str:
        return self.key + ".png"

    @property
    def seed(self) -> int | None:
        return self.config.seed if self.config is not None else None

    def shard(self, n: int) -> int:
        """Which of ``n`` shards renders this item (stable when ``--seeds`` grows)."""
        return (self.row + (self.seed or 0)) % n


def settings_hash(cfg: RunConfig) -> str:
    """8 hex digits of SHA-256 over every setting that changes the pixels.

    ``device`` and ``save_every`` are left out: they change where and how a run is watched,
    not what it makes, so a re-run on another machine still finds its finished items.
    """
    d = cfg.to_dict()
    d.pop("device", None)
    d.pop("save_every", None)
    text = json.dumps(d, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:8]


def item_key(row: int, cfg: RunConfig, label: str | None = None) -> str:
    """``000017-a-red-fox-s3-1a2b3c4d``: row, ASCII slug (of the id or prompt), seed, hash."""
    text = label if label else (cfg.prompt or "image")
    return f"{row:06d}-{slugify(text, SLUG_CHARS)}-s{cfg.seed}-{settings_hash(cfg)}"


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0-3"``, ``"1,5,9"`` or ``"0-3,10"`` into a list of distinct seeds, in order."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ConfigError("seeds", f"expected N, A-B or a comma list of those (seeds are "
                              f"0 to {MAX_SEED}), got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError("seeds", f"range {part!r} is empty (A-B needs A <= B)")
        if hi > MAX_SEED:
            raise ConfigError("seeds", f"{hi} is out of range; allowed: 0 to {MAX_SEED}")
        if len(seeds) + hi - lo + 1 > MAX_ITEMS_PER_ROW:
            raise ConfigError("seeds", f"more than {MAX_ITEMS_PER_ROW:,} seeds per prompt")
        seeds.extend(range(lo, hi + 1))
    return list(dict.fromkeys(seeds))


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/N"`` (0 <= i < N) into ``(i, N)``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError("shard", f"expected i/N with 0 <= i < N (e.g. 0/4 for "
                          f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _typed_base(base: dict[str, Any]) -> dict[str, Any] | None:
    """``base`` as typed RunConfig field values (tuples, ints), or None if it has no prompt
    slot to fill; lets rows that set only a prompt skip re-parsing the shared settings."""
    try:
        cfg = RunConfig.from_dict({**base, "prompt": base.get("prompt") or "x"})
    except (ConfigError, ValueError, TypeError):
        return None
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def expand_row(row: Row, base: dict[str, Any], seeds: list[int],
               typed: dict[str, Any] | None = None) -> Iterator[Item]:
    """The items of one row: one per seed (or the row's own seed), each fully validated.

    A row that is invalid (unreadable, a bad override) yields one Item whose ``error`` names
    the line number.

    Args:
        row: the row.
        base: settings shared by every row (JSON-like values, as from ``RunConfig.to_dict``).
        seeds: the seeds of every row that sets none (empty: the base seed).
        typed: ``_typed_base(base)``, a shortcut for rows that set only a prompt.
    """
    if row.error is not None:
        yield Item(row.index, row.line,
                   f"{row.index:06d}-line{row.line}-invalid", error=row.error)
        return
    values = dict(row.values or {})
    label = values.pop("id", None)
    if typed is not None and label is None and values.keys() == {"prompt"} \
            and isinstance(values["prompt"], str) and (seeds or typed["seed"] != -1):
        try:  # the common case (a .txt list): only the prompt and seed vary
            cfgs = [RunConfig(**{**typed, "prompt": values["prompt"], "seed": seed})
                    for seed in seeds or [typed["seed"]]]
        except (ConfigError, ValueError, TypeError):
            cfgs = None  # the full path below reports it the same way
        if cfgs is not None:
            for cfg in cfgs:
                yield Item(row.index, row.line, item_key(row.index, cfg), cfg)
            return
    try:
        if label is not None and not isinstance(label, (str, int)):
            raise ConfigError("id", f"expected text, got {type(label).__name__}")
        label = str(label) if label is not None else None
        data = {**base, **values}
        size = data.pop("size", None)
        if size is not None:
            data["width"], data["height"] = parse_size(size)
        if "seed" in values:
            row_seeds = [RunConfig.from_dict({**data, "prompt": "x"}).seed]
        else:
            row_seeds = seeds or [data.get("seed", 0)]
        if -1 in row_seeds:
            raise ConfigError("seed", "-1 (random) cannot be used in a batch: every item "
                              "needs a fixed seed so that a re-run finds it; use --seeds")
        cfgs = [RunConfig.from_dict({**data, "seed": seed}) for seed in row_seeds]
    except (ConfigError, ValueError, TypeError) as e:
        yield Item(row.index, row.line, f"{row.index:06d}-line{row.line}-invalid",
                   label=label if isinstance(label, str) else None,
                   error=f"line {row.line}: {e}")
        return
    for cfg in cfgs:
        yield Item(row.index, row.line, item_key(row.index, cfg, label), cfg, label)


def iter_items(rows: Iterable[Row], base: dict[str, Any], seeds: list[int],
               shard: tuple[int, int] = (0, 1)) -> Iterator[Item]:
    """Every item of ``rows`` that belongs to ``shard`` (``(i, N)``), lazily."""
    i, n = shard
    typed = _typed_base(base)
    for row in rows:
        for item in expand_row(row, base, seeds, typed):
            if item.shard(n) == i:
                yield item


# ---------------------------------------------------------------------------------------------
# manifest


def manifest_name(shard: tuple[int, int]) -> str:
    """``manifest.jsonl``, or ``manifest.shard-I-of-N.jsonl`` for a shard (one writer a file:
    appends from several hosts to one file on NFS or Lustre can interleave)."""
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
    it failed, ``interrupted`` clears a failure (the item is rendered again).
    """
    state = ManifestState()
    for path in sorted(Path(folder).glob("manifest*.jsonl")):
        with open(path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                    key, status = rec["id"], rec["status"]
                except (ValueError, KeyError, TypeError):
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
    """An append-only JSON-lines log; every line is written with one ``write`` and fsynced."""

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
        """Append one record and make it durable before returning."""
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        data = line.encode("utf-8", "backslashreplace")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def record(item: Item, status: str, *, error: str | None = None, seconds: float | None = None,
           path: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest line of one item."""
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


# ---------------------------------------------------------------------------------------------
# rendering one item (in this process or in a Ray actor)


@dataclass
class Rendered:
    """The result of rendering one item: the encoded files, or why there are none."""

    status: str
    seconds: float
    png: bytes | None = None
    gif: bytes | None = None
    error: str | None = None


def render_item(cfg: RunConfig, cache, on_step: Callable[[Any], None] | None = None) -> Rendered:
    """Render one config to PNG bytes (and GIF bytes with ``save_every``); never raises for a
    bad item: a failure becomes ``Rendered(status="failed" | "nonfinite", error=...)``.

    ``KeyboardInterrupt`` propagates (the caller records the item as interrupted).

    Args:
        cfg: the item's settings (a concrete seed).
        cache: the worker's ModelCache (models load once per worker, not per item).
        on_step: called with every Step (progress display).
    """
    from clipforge.cli import usage_errors
    from clipforge.errors import NonFiniteLossError
    from clipforge.runner import Run
    from clipforge.outputs import FrameRecorder, png_bytes

    t0 = time.perf_counter()
    run, ok = None, False
    try:
        run = Run(cfg, cache=cache)
        frames = FrameRecorder(cfg.save_every) if cfg.save_every else None
        for step in run:
            if frames is not None:
                frames(step)
            if on_step is not None:
                on_step(step)
        png = png_bytes(run.image(), run.config)
        gif = None
        if frames is not None:
            import io

            buf = io.BytesIO()
            frames.frames[0].save(buf, format="GIF", save_all=True,
                                  append_images=frames.frames[1:], duration=80, loop=0)
            gif = buf.getvalue()
        ok = True
        return Rendered("ok", time.perf_counter() - t0, png, gif)
    except NonFiniteLossError as e:
        return Rendered("nonfinite", time.perf_counter() - t0, error=str(e))
    except usage_errors() as e:
        return Rendered("failed", time.perf_counter() - t0, error=str(e))
    except Exception as e:  # one bad item never stops the rest
        return Rendered("failed", time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
    finally:
        # after a failure, free what the traceback kept alive (a full gc.collect); after a
        # success dropping the Run frees its tensors, and a gc per item would cost more than
        # a small render
        if run is not None and not ok:
            run.release()


class _RayWorker:
    """A Ray actor: loads models once (its own ModelCache) and renders the items sent to it."""

    def __init__(self, threads: int):
        import torch

        from clipforge.guidance.clip_models import ModelCache

        torch.set_num_threads(max(1, threads))
        self.cache = ModelCache()

    def render(self, config_json: str) -> Rendered:
        """Render one item (settings as RunConfig JSON) with this actor's loaded models."""
        return render_item(RunConfig.from_json(config_json), self.cache)


# ---------------------------------------------------------------------------------------------
# the driver: decide, render, write, record


from clipforge.errors import DiskError  # noqa: E402  (writing an output failed: the batch stops)


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


class Batch:
    """One batch run over an output folder: the skip decisions, the writes and the manifest.

    Args:
        out: the output folder (created).
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

    def open(self) -> None:
        """Open this shard's manifest for appending (done on the first record)."""
        self.manifest = Manifest(self.out / manifest_name(self.shard))

    def close(self) -> None:
        """Close the manifest (every line is already on disk)."""
        if self.manifest is not None:
            self.manifest.close()

    def decide(self, item: Item) -> str:
        """``render``, ``done`` (its PNG exists), ``failed-earlier``, or ``invalid``.

        Only a ``stat`` of the final name: finished outputs are never read back.
        """
        if item.error is not None:
            if item.key in self.state.failed and not self.retry_failed:
                return "failed-earlier"
            return "invalid"
        if (self.out / item.filename).exists():
            return "done"
        if item.key in self.state.failed and not self.retry_failed:
            return "failed-earlier"
        return "render"

    def pending(self, items: Iterable[Item]) -> Iterator[Item]:
        """Items that need rendering; the rest are counted (and recorded when needed) here."""
        for item in items:
            what = self.decide(item)
            if what == "render":
                self.stats.to_render += 1
                yield item
            elif what == "done":
                self.stats.skipped += 1
                if item.key not in self.state.ok:  # killed between the rename and the log
                    self._log(record(item, "ok", path=item.filename, recovered=True))
                    self.state.ok.add(item.key)
                    self.stats.recovered += 1
            elif what == "failed-earlier":
                self.stats.failed_earlier += 1
            else:
                self.stats.failed += 1
                self._log(record(item, "failed", error=item.error))
                self.state.failed[item.key] = item.error or "invalid"

    def finish(self, item: Item, result: Rendered) -> None:
        """Write one result's files atomically, then its manifest line.

        Raises:
            DiskError: the output could not be written (the manifest records it if it can).
        """
        from clipforge.outputs import atomic_write_bytes

        if result.status != "ok":
            self.stats.failed += 1
            self._log(record(item, result.status, error=result.error, seconds=result.seconds))
            return
        path = safe_join(self.out, item.filename)
        try:
            if result.gif is not None:
                atomic_write_bytes(path.with_suffix(".gif"), result.gif)
            atomic_write_bytes(path, result.png)
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            message = f"cannot write {str(path)!r}: {reason}"
            if e.errno == errno.ENOSPC:
                message += " (disk full: free space and re-run; finished items are kept)"
            with contextlib.suppress(OSError):
                self._log(record(item, "interrupted", error=message, seconds=result.seconds))
            raise DiskError(message) from e
        self._log(record(item, "ok", path=item.filename, seconds=result.seconds))
        self.state.ok.add(item.key)
        self.stats.rendered += 1

    def interrupted(self, item: Item, seconds: float | None = None) -> None:
        """Record an item cut short (Ctrl-C, SIGTERM, a stopped batch): the next run renders it."""
        self.stats.interrupted += 1
        with contextlib.suppress(OSError):
            self._log(record(item, "interrupted", error="interrupted (Ctrl-C or SIGTERM)",
                             seconds=seconds))

    def _log(self, rec: dict[str, Any]) -> None:
        if self.manifest is None:
            self.open()
        self.manifest.write(rec)


def run_sequential(batch: Batch, items: Iterable[Item], progress: "_Progress") -> None:
    """Render in this process, models loaded once (one ModelCache for every item)."""
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
        progress.end_item(item, result.status)


def run_ray(batch: Batch, items: Iterable[Item], progress: "_Progress", address: str,
            workers: int | None, use_gpus: bool = True, in_flight: int = 2) -> None:
    """Render on a Ray cluster: one actor per GPU (or per CPU slot), items streamed to them.

    At most ``in_flight`` items per actor are queued, so a long list stays in constant memory.
    Results come back as PNG bytes and are written and recorded here, by one writer.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("ray", "the Ray backend needs the ray package; run: pip install "
                          "'clipforge[ray]'") from None
    from clipforge.cli import sigterm_as_interrupt

    started = False
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False)
        started = True
    try:
        with sigterm_as_interrupt():  # ray.init installed its own SIGTERM handler (exit 15)
            _ray_loop(ray, batch, items, progress, workers, use_gpus, in_flight)
    finally:
        if started:
            ray.shutdown()


def _ray_loop(ray, batch: Batch, items: Iterable[Item], progress: "_Progress",
              workers: int | None, use_gpus: bool, in_flight: int) -> None:
    """Start the actors, keep each fed with ``in_flight`` items, write results as they come;
    on any exit the items still out are recorded as interrupted and the actors killed."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if use_gpus else 0
    cpus = max(1, int(resources.get("CPU", 1)))
    slots = gpus or cpus
    if workers is not None and workers > slots:
        # actors beyond the cluster's slots would never start and their items would wait
        progress.note(f"ray: the cluster has {slots} {'GPU' if gpus else 'CPU'} slot(s); "
                      f"using {slots} actors, not {workers}")
    n = min(workers or slots, slots)
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    threads = 1
    actor_cls = ray.remote(**options)(_RayWorker)
    actors = [actor_cls.remote(threads) for _ in range(n)]
    progress.note(f"ray: {n} actor(s), {'1 GPU' if gpus else '1 CPU'} each")
    pending: dict[Any, tuple[Item, int, Any, float]] = {}
    load = {i: 0 for i in range(n)}
    source = iter(batch.pending(items))
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < n * in_flight:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                slot = min(load, key=load.get)
                ref = actors[slot].render.remote(item.config.to_json())
                pending[ref] = (item, slot, actors[slot], time.perf_counter())
                load[slot] += 1
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                item, slot, actor, t0 = pending.pop(ref)
                load[slot] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if actors[slot] is actor:  # replace the dead worker (once)
                        actors[slot] = actor_cls.remote(threads)
                    result = Rendered("failed", time.perf_counter() - t0,
                                      error=f"worker died: {str(e).splitlines()[0]}")
                except ray.exceptions.RayError as e:
                    result = Rendered("failed", time.perf_counter() - t0,
                                      error=f"{type(e).__name__}: {e}")
                batch.finish(item, result)
                progress.end_item(item, result.status)
    except BaseException:
        for item, _, _, t0 in pending.values():
            batch.interrupted(item, time.perf_counter() - t0)
        raise
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)


# ---------------------------------------------------------------------------------------------
# progress display


class _Progress:
    """Overall and per-item progress bars on stderr (rich); no-ops when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.last = 0.0

    def __enter__(self) -> "_Progress":
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
                TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False)
            self.bar.__enter__()
            self.all = self.bar.add_task("[bold]batch", total=None)
            self.one = self.bar.add_task("item", total=None, visible=False)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif not self.quiet:
            typer.echo(text, err=True)

    def start_item(self, item: Item) -> None:
        if self.bar is not None:
            self.bar.update(self.one, description=item.key[:48], completed=0,
                            total=item.config.steps or None, visible=True)

    def step(self, step) -> None:
        if self.bar is not None:
            now = time.monotonic()
            if now - self.last > 0.2 or step.i == step.total:
                self.last = now
                self.bar.update(self.one, completed=step.i)

    def end_item(self, item: Item, status: str) -> None:
        if self.bar is not None:
            self.bar.advance(self.all)
            if status != "ok":
                self.bar.console.print(f"{status}: {item.key}")


# ---------------------------------------------------------------------------------------------
# the command


def load_base(config_file: Optional[Path], options: dict[str, Any]) -> dict[str, Any]:
    """Settings shared by every item: RunConfig defaults < ``--config`` file < command-line
    options. Validated now (exit 2 before starting); the prompt comes from each row."""
    from clipforge.cli import config_from_options

    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = config_file.read_bytes()
        except OSError as e:
            raise ConfigError("config", f"cannot read {str(config_file)!r}: {e.strerror}") from None
        try:
            if config_file.suffix.lower() == ".toml":
                data = tomllib.loads(raw.decode("utf-8"))
            elif config_file.suffix.lower() == ".json":
                data = json.loads(raw)
            else:
                raise ConfigError("config", f"{config_file.name!r}: expected a .toml or .json "
                                  "file of settings")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("config", f"{config_file.name!r} cannot be parsed: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", f"{config_file.name!r} must hold an object of settings")
        if "clipforge_config" in data:
            data = data.get("config") or {}
        data = dict(data)
        size = data.pop("size", None)
        if size is not None:
            data["width"], data["height"] = parse_size(size)
    has_prompt = bool(data.get("prompt"))
    base = RunConfig.from_dict({**data, "prompt": data.get("prompt") or "x"})
    merged = config_from_options(options, base).to_dict()
    if not has_prompt:
        merged.pop("prompt")
    return merged


def _batch(list_path: Path, out: Path, seeds: Optional[str], config_file: Optional[Path],
           shard_text: Optional[str], ray_address: Optional[str], workers: Optional[int],
           retry_failed: bool, plan: bool, quiet: bool, options: dict[str, Any]) -> int:
    from clipforge.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, \
        sigterm_as_interrupt, usage_errors

    def err(message: str) -> None:
        typer.echo(message, err=True)

    t0 = time.perf_counter()
    try:
        if options.get("seed") is not None and seeds is not None:
            raise ConfigError("seeds", "give --seed or --seeds, not both")
        seed_list = parse_seeds(seeds) if seeds is not None else []
        shard = parse_shard(shard_text) if shard_text is not None else (0, 1)
        if workers is not None and workers < 1:
            raise ConfigError("workers", f"{workers} is out of range; allowed: >= 1")
        if workers is not None and ray_address is None:
            raise ConfigError("workers", "--workers needs --ray (or split the list with "
                              "--shard i/N over several processes)")
        if ray_address is not None:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ConfigError("ray", "the Ray backend needs the ray package; run: pip "
                                  "install 'clipforge[ray]'")
        base = load_base(config_file, options)
        if not seed_list and base.get("seed") == -1:
            raise ConfigError("seed", "-1 (random) cannot be used in a batch: every item needs "
                              "a fixed seed so that a re-run finds it; use --seeds")
        if out.exists() and not out.is_dir():
            raise ConfigError("out", f"{str(out)!r} exists and is not a folder")
        rows = read_rows(list_path)
        first = next(rows, None)  # header and format errors surface here, before any work
        if first is None:
            raise ConfigError("list", f"{list_path.name!r} has no prompts (empty, or only "
                              "blank and # comment lines)")
    except usage_errors() as e:
        err(f"error: {e}")
        return EXIT_USAGE

    def all_rows() -> Iterator[Row]:
        yield first
        yield from rows

    items = iter_items(all_rows(), base, seed_list, shard)
    if plan:
        return _plan(out, items, shard, retry_failed, t0)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err(f"error: cannot create the output folder {str(out)!r}: {e.strerror}")
        return EXIT_RUNTIME
    out = out.resolve()
    swept = sweep_shard_temp_files(out, shard)
    batch = Batch(out, shard, retry_failed)
    status = EXIT_OK
    try:
        with sigterm_as_interrupt(), _Progress(quiet) as progress:
            if swept:
                progress.note(f"swept {swept} temp file(s) left by an earlier run")
            if ray_address is not None:
                run_ray(batch, items, progress, ray_address, workers,
                        use_gpus=base.get("device") != "cpu")
            else:
                run_sequential(batch, items, progress)
    except KeyboardInterrupt:
        err("interrupted; re-run the same command to resume")
        status = EXIT_INTERRUPTED
    except DiskError as e:
        err(f"error: {e}; the batch stopped")
        status = EXIT_RUNTIME
    except ConfigError as e:  # the Ray extra is missing
        err(f"error: {e}")
        status = EXIT_USAGE
    except OSError as e:  # the manifest itself cannot be written
        err(f"error: cannot write the manifest in {str(out)!r}: {e}; the batch stopped")
        status = EXIT_RUNTIME
    finally:
        batch.close()
    s = batch.stats
    if status == EXIT_OK and (s.failed or s.failed_earlier):
        status = EXIT_RUNTIME
    err(f"batch: {s.rendered} rendered, {s.skipped} skipped (already done), {s.failed} failed"
        + (f", {s.failed_earlier} failed earlier (skipped; --retry-failed retries them)"
           if s.failed_earlier else "")
        + (f", {s.interrupted} interrupted" if s.interrupted else "")
        + (f", {s.recovered} finished file(s) added to the manifest" if s.recovered else "")
        + f" in {time.perf_counter() - t0:.1f} s; manifest: "
        f"{out / manifest_name(shard)}")
    return status


def _plan(out: Path, items: Iterable[Item], shard: tuple[int, int], retry_failed: bool,
          t0: float) -> int:
    """List what a run would do, one line per item, without loading any model."""
    counts = {"render": 0, "done": 0, "failed-earlier": 0, "invalid": 0}
    batch = Batch(out, shard, retry_failed) if out.is_dir() else None
    write = sys.stdout.write
    for item in items:
        what = batch.decide(item) if batch is not None else (
            "invalid" if item.error is not None else "render")
        counts[what] += 1
        if what == "render":
            write(f"render  {item.filename}\n")
        elif what == "done":
            write(f"skip    {item.filename} (done)\n")
        elif what == "failed-earlier":
            write(f"skip    {item.filename} (failed earlier: "
                  f"{batch.state.failed.get(item.key, '')[:120]})\n")
        else:
            write(f"invalid {item.error}\n")
    sys.stdout.flush()
    typer.echo(f"plan: {counts['render']} to render, {counts['done']} done, "
               f"{counts['failed-earlier']} failed earlier, {counts['invalid']} invalid "
               f"({time.perf_counter() - t0:.1f} s)", err=True)
    return 0


def _batch_command():
    """Build ``batch`` with every ``generate`` option (derived from RunConfig)."""
    from clipforge.cli import config_parameters

    def batch(**kwargs: Any) -> None:
        named = {k: kwargs.pop(k) for k in ("list_path", "out", "seeds", "config_file", "shard",
                                            "ray", "workers", "retry_failed", "plan", "quiet")}
        raise typer.Exit(_batch(named["list_path"], named["out"], named["seeds"],
                                named["config_file"], named["shard"], named["ray"],
                                named["workers"], named["retry_failed"], named["plan"],
                                named["quiet"], kwargs))

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("list_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                          default=typer.Argument(..., metavar="LIST", help="Prompt list: .txt "
                                                 "(a prompt a line, # comments), .csv (a prompt "
                                                 "column, other columns override settings) or "
                                                 ".jsonl (settings per line).")),
        inspect.Parameter("out", kw, annotation=Path, default=typer.Option(
            ..., "--out", "-o", help="Output folder (PNGs and manifest.jsonl).")),
        inspect.Parameter("seeds", kw, annotation=Optional[str], default=typer.Option(
            None, "--seeds", help="Seeds for every prompt: 0-3, 1,5,9 (default: --seed).")),
        inspect.Parameter("config_file", kw, annotation=Optional[Path], default=typer.Option(
            None, "--config", help="Base settings file (.toml or .json); flags override it.")),
        inspect.Parameter("shard", kw, annotation=Optional[str], default=typer.Option(
            None, "--shard", help="Render only shard i of N (0 <= i < N), e.g. for Slurm "
                                  "job arrays.")),
        inspect.Parameter("ray", kw, annotation=Optional[str], default=typer.Option(
            None, "--ray", help="Render on Ray: 'auto' (a running cluster, else a local one) "
                                "or a cluster ADDRESS. Needs clipforge\\[ray].")),
        inspect.Parameter("workers", kw, annotation=Optional[int], default=typer.Option(
            None, "--workers", help="Ray actors (default: one per GPU, else per CPU).")),
        inspect.Parameter("retry_failed", kw, annotation=bool, default=typer.Option(
            False, "--retry-failed", help="Render again the items an earlier run recorded as "
                                          "failed.")),
        inspect.Parameter("plan", kw, annotation=bool, default=typer.Option(
            False, "--plan", help="List what would be rendered or skipped; load no model.")),
        inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(
            False, "--quiet", "-q", help="No progress bars.")),
        *config_parameters(),
    ]
    batch.__signature__ = inspect.Signature(params)
    batch.__annotations__ = {p.name: p.annotation for p in params}
    batch.__doc__ = ("Render a prompt list (x seeds) into a folder; re-runs resume, --shard "
                     "and --ray scale out.")
    return batch


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to the ``clipforge`` CLI."""
    app.command("batch")(_batch_command())
