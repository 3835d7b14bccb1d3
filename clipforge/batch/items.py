"""Items: a list row times a seed, with its full settings, deterministic name and shard.

Settings are layered with :func:`clipforge.config.merge`, as everywhere else: the shared
settings of the batch (a partial ``merge(...)`` dict: a ``--config`` file, then the flags), the
row's own values, then the seed; ``RunConfig.from_dict`` of that is the item's config. An item's
name (``000017-a-red-fox-s3-1a2b3c4d``) depends only on its row, prompt or id, seed and the
settings that change the pixels, so a re-run finds what an earlier run finished.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from clipforge.batch.lists import Row
from clipforge.config import MAX_SEED, RunConfig, merge
from clipforge.errors import ConfigError, UsageError
from clipforge.guidance.prompts import prompts_from_config
from clipforge.outputs import slugify

MAX_ITEMS_PER_ROW = 100_000  # --seeds expands every row; more than this is surely a typo
SLUG_CHARS = 32  # keeps names (and the temp names derived from them) well under 100 bytes
_ITEM_ERRORS = (ValueError, TypeError)  # UsageError is a ValueError: a bad row, not a crash


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
        """The output PNG's name in the folder."""
        return self.key + ".png"

    @property
    def seed(self) -> int | None:
        """The item's seed (None for an invalid row)."""
        return self.config.seed if self.config is not None else None

    def shard(self, n: int) -> int:
        """Which of ``n`` shards renders this item (stable when ``--seeds`` grows).

        Args:
            n: the number of shards.
        """
        return (self.row + (self.seed or 0)) % n


def settings_hash(cfg: RunConfig) -> str:
    """8 hex digits of SHA-256 over every setting that changes the pixels.

    ``device``, ``save_every`` and ``save_video`` are left out: they change where and how a run is watched,
    not what it makes, so a re-run on another machine still finds its finished items.

    Args:
        cfg: the item's full settings.
    """
    d = cfg.to_dict()
    d.pop("device", None)
    d.pop("save_every", None)
    d.pop("save_video", None)
    text = json.dumps(d, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:8]


def item_key(row: int, cfg: RunConfig, label: str | None = None) -> str:
    """``000017-a-red-fox-s3-1a2b3c4d``: row, ASCII slug (of the id or prompt), seed, hash.

    Args:
        row: the row's index in the list.
        cfg: the item's full settings.
        label: the row's ``id``; the slug is made of it instead of the prompt.
    """
    text = label if label else (cfg.prompt or "image")
    return f"{row:06d}-{slugify(text, SLUG_CHARS)}-s{cfg.seed}-{settings_hash(cfg)}"


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0-3"``, ``"1,5,9"`` or ``"0-3,10"`` into a list of distinct seeds, in order.

    Args:
        text: the ``--seeds`` value.

    Raises:
        ConfigError: (field ``seeds``) malformed, empty, out of range or too many seeds.
    """
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
    """Parse ``"i/N"`` (0 <= i < N) into ``(i, N)``.

    Args:
        text: the ``--shard`` value.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError("shard", f"expected i/N with 0 <= i < N (e.g. 0/4 for "
                          f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _row_settings(row: Row) -> tuple[dict[str, Any], Any]:
    """The row's settings (RunConfig fields and ``size``) and its ``id``."""
    values = dict(row.values or {})
    return values, values.pop("id", None)


def expand_row(row: Row, base: Mapping[str, Any], seeds: list[int],
               template: RunConfig | None = None) -> Iterator[Item]:
    """The items of one row: one per seed (or the row's own seed), each fully validated.

    A row that is invalid (unreadable, a bad override) yields one Item whose ``error`` names
    the line number.

    Args:
        row: the row.
        base: settings shared by every row (a partial ``merge(...)`` dict).
        seeds: the seeds of every row that sets none (empty: the shared seed, default 0).
        template: the config of an earlier row that set only its prompt: a row that also sets
            only its prompt (a .txt list) is that config with another prompt and seed, which
            skips merging the shared settings again.
    """
    invalid = f"{row.index:06d}-line{row.line}-invalid"
    if row.error is not None:
        yield Item(row.index, row.line, invalid, error=row.error)
        return
    values, label = _row_settings(row)
    try:
        if label is not None and not isinstance(label, (str, int)):
            raise ConfigError("id", f"expected text, got {type(label).__name__}")
        label = str(label) if label is not None else None
        if template is not None and _prompt_only(row):
            settings = {"seed": base.get("seed", 0)}
            cfgs = [template.replace(prompt=values["prompt"], seed=seed)
                    for seed in seeds or [settings["seed"]]]
        else:
            settings = merge(base, values)
            row_seeds = [settings.get("seed", 0)] if "seed" in values or not seeds else seeds
            if -1 in row_seeds:
                raise ConfigError("seed", "-1 (random) cannot be used in a batch: every item "
                                  "needs a fixed seed so that a re-run finds it; use --seeds")
            cfgs = [RunConfig.from_settings(settings, {"seed": seed}) for seed in row_seeds]
        prompts_from_config(cfgs[0])  # a prompt empty by its syntax (`|`, `:2`, `x:0`)
    except _ITEM_ERRORS as e:
        yield Item(row.index, row.line, invalid,
                   label=label if isinstance(label, str) else None,
                   error=f"line {row.line}: {e}")
        return
    for cfg in cfgs:
        yield Item(row.index, row.line, item_key(row.index, cfg, label), cfg, label)


def _prompt_only(row: Row) -> bool:
    """The row sets its prompt (as text) and nothing else."""
    values = row.values or {}
    return values.keys() == {"prompt"} and isinstance(values["prompt"], str)


def iter_items(rows: Iterable[Row], base: Mapping[str, Any], seeds: list[int],
               shard: tuple[int, int] = (0, 1)) -> Iterator[Item]:
    """Every item of ``rows`` that belongs to ``shard``, lazily.

    Args:
        rows: the list's rows (streamed).
        base: settings shared by every row (a partial ``merge(...)`` dict).
        seeds: the seeds of every row that sets none.
        shard: ``(i, N)``: only items of shard ``i`` of ``N``.
    """
    i, n = shard
    template = None
    for row in rows:
        for item in expand_row(row, base, seeds, template):
            if template is None and item.config is not None and _prompt_only(row):
                template = item.config
            if item.shard(n) == i:
                yield item


def check_shared(base: Mapping[str, Any], row: Row, inputs: bool = True) -> None:
    """Raise the error every item would fail with because of a shared setting, before any work.

    The shared settings are partial (no prompt), so they are checked on the first row's
    settings (or, when that row is bad on its own, on a placeholder prompt): the config's
    rules between fields, then :func:`clipforge.runner.check_inputs` (the device, generator
    and options, init image, CLIP names; no model loads). An error naming a setting the row
    leaves to the shared ones is the shared settings' fault: it is raised (exit 2, no manifest
    line), so a corrected re-run renders every item.

    Args:
        base: the shared settings (a partial ``merge(...)`` dict).
        row: the list's first row.
        inputs: also run ``check_inputs`` (False for a plan: it imports torch).

    Raises:
        UsageError: a shared setting is bad.
    """

    values: dict[str, Any] = {}
    if row.error is None:
        values = _row_settings(row)[0]
    for probe in (values, {}) if values else ({},):
        try:
            own = set(merge(probe))
        except _ITEM_ERRORS:
            continue  # the row's own fault: only its items fail
        if not probe:
            probe = {"prompt": "shared settings check"}
        try:
            cfg = RunConfig.from_settings(base, probe)
            if inputs:
                from clipforge.runner import check_inputs

                check_inputs(cfg)
            return
        except _ITEM_ERRORS as e:
            name = getattr(e, "field", None)
            fields = {"width", "height"} if name == "size" else {name}
            if isinstance(e, UsageError) and fields & set(base) and not fields & own:
                raise


__all__ = ["Item", "settings_hash", "item_key", "parse_seeds", "parse_shard", "expand_row",
           "iter_items", "check_shared", "MAX_ITEMS_PER_ROW"]
