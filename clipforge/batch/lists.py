"""Prompt lists (``.txt``, ``.csv``, ``.jsonl``) read as a stream of :class:`Row` objects.

A list of millions of prompts is read line by line, in constant memory. A list that cannot be
used at all (missing, unknown format, a CSV header without a ``prompt`` column) raises a
:class:`~clipforge.errors.ConfigError` on the first ``next()``, before any work starts; a
single unreadable line becomes a Row with ``error`` set, so only that item fails.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from clipforge.config import FIELDS
from clipforge.errors import ConfigError

ROW_KEYS = ("id", "size")  # list columns that are not RunConfig fields


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

    Args:
        path: the list; its suffix says the format (``.ndjson`` is read as ``.jsonl``).

    Raises:
        ConfigError: (field ``list``) the file is missing or its format unknown, here; a CSV
            header that cannot be used, on the first ``next()``.
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


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _csv_columns(p: Path, header: list[str] | None) -> list[str]:
    """The header's column names, checked against the RunConfig fields and ROW_KEYS."""
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
    allowed = list(FIELDS) + list(ROW_KEYS)
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise ConfigError("list", f"{p.name!r}: unknown column {unknown[0]!r}; allowed: "
                          f"{', '.join(allowed)}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise ConfigError("list", f"{p.name!r}: column {dupes[0]!r} appears twice")
    return columns


def _read_csv(p: Path) -> Iterator[Row]:
    with open(p, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)  # blank lines before the header
        columns = _csv_columns(p, header)
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
            except RecursionError:
                error = f"line {lineno}: JSON is nested too deeply"
            else:
                if isinstance(values, str):
                    values = {"prompt": values}
                elif not isinstance(values, dict):
                    error, values = (f"line {lineno}: expected a JSON object of settings, "
                                     f"got {type(values).__name__}"), None
        yield Row(index, lineno, values, error)
        index += 1


__all__ = ["Row", "read_rows", "ROW_KEYS"]
