"""Batch rendering of prompt lists that never loses work and never redoes it (no CLI here).

A prompt list (``.txt``, ``.csv`` or ``.jsonl``, streamed line by line) times a list of seeds
gives items; each gets a deterministic file name (row, ASCII slug, seed, short hash of its
settings), is written atomically and recorded in an append-only ``manifest.jsonl`` (one
fsynced JSON line per result). A re-run sweeps stale temp files, skips every item whose PNG
exists, retries failed items only when asked and renders the rest. Work is split by shard
(Slurm job arrays, one manifest per shard) or run on a Ray cluster, one actor per GPU or CPU.

The modules, bottom up: :mod:`~clipforge.batch.lists` (reading lists),
:mod:`~clipforge.batch.items` (items, seeds, shards, names), :mod:`~clipforge.batch.manifest`,
:mod:`~clipforge.batch.progress` (the observer told about items and steps),
:mod:`~clipforge.batch.runner` (render_item, Batch, run_sequential),
:mod:`~clipforge.batch.ray_backend` and :mod:`~clipforge.batch.driver` (prepare, Job), which
``clipforge batch`` (:mod:`clipforge.cli.batch`) calls. Nothing here imports typer, rich, torch
or the CLI at import time.
"""

from clipforge.batch.driver import Job, prepare
from clipforge.batch.items import (Item, check_shared, expand_row, item_key, iter_items,
                                   parse_seeds, parse_shard, settings_hash)
from clipforge.batch.lists import Row, read_rows
from clipforge.batch.manifest import (MANIFEST, STATUSES, Manifest, ManifestState,
                                      manifest_name, read_manifests, record,
                                      sweep_shard_temp_files)
from clipforge.batch.progress import Progress, Silent
from clipforge.batch.ray_backend import run_ray
from clipforge.batch.runner import Batch, Rendered, Stats, render_item, run_sequential

__all__ = ["Job", "prepare", "Item", "check_shared", "expand_row", "item_key", "iter_items",
           "parse_seeds", "parse_shard", "settings_hash", "Row", "read_rows", "MANIFEST",
           "STATUSES", "Manifest", "ManifestState", "manifest_name", "read_manifests", "record",
           "sweep_shard_temp_files", "run_ray", "Batch", "Progress", "Rendered", "Silent",
           "Stats", "render_item", "run_sequential"]
