"""``clipforge batch``: parse the flags, hand them to :mod:`clipforge.batch`, report the outcome.

Exit codes: 0 all rendered, 1 some item failed (or the disk filled up), 2 bad usage or a bad
list caught before starting, 130 interrupted (Ctrl-C or SIGTERM). Every ``generate`` flag
works here and applies to every item; the shared settings are
``merge(load_settings(--config), flags)`` and each row overrides them for its items.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from clipforge.batch import Item, Job, Stats, parse_seeds, parse_shard, prepare
from clipforge.cli.common import (ProgressBars, echo_err, quiet_option, report,
                                  sigterm_as_interrupt)
from clipforge.cli.options import argument, command, config_parameters, flag_settings, option
from clipforge.config import load_settings, merge
from clipforge.errors import EXIT_OK, EXIT_RUNTIME, ConfigError

STOPPED = "the batch stopped; re-run the same command to resume"


class BatchBars:
    """The batch's progress observer (:class:`clipforge.batch.Progress`, whose methods say
    what each receives) drawn as two bars: items done, and the steps of the running item.

    Args:
        bars: the shared progress display.
        out: the output folder.
        as_json: print one JSON line per image written on stdout (``--json``).
    """

    def __init__(self, bars: ProgressBars, out: Path | None = None, as_json: bool = False):
        self.bars, self.out, self.as_json = bars, out, as_json
        self.all = bars.add("[bold]batch", total=None)
        self.one = bars.add("item", total=None, visible=False)

    def note(self, text: str) -> None:
        """A line above the bars."""
        self.bars.note(text)

    def start_item(self, item: Item) -> None:
        """Reset the item bar for ``item``."""
        self.bars.update(self.one, description=item.key[:48], completed=0,
                         total=item.config.steps or None, visible=True)

    def step(self, step: Any) -> None:
        """Move the item bar (no loss read-back: a batch is watched by the item)."""
        self.bars.step(self.one, step, loss=False)

    def end_item(self, item: Item, result: Any) -> None:
        """Count the item; name it when it did not end ok; with ``--json`` print its line."""
        self.bars.update(self.all, advance=1)
        if result.status != "ok":
            self.bars.note(f"{result.status}: {item.key}")
        elif self.as_json:
            sys.stdout.write(json.dumps({"path": str(self.out / item.filename), "seed": item.seed,
                                         "seconds": round(result.seconds, 3),
                                         "loss": result.loss}) + "\n")
            sys.stdout.flush()


def summary(stats: Stats, seconds: float, manifest: Path) -> str:
    """The last line of a batch on stderr.

    Args:
        stats: the run's counts.
        seconds: how long it ran.
        manifest: this shard's manifest.
    """
    s = stats
    return (f"batch: {s.rendered} rendered, {s.skipped} skipped (already done), {s.failed} "
            "failed"
            + (f", {s.failed_earlier} failed earlier (skipped; --retry-failed retries them)"
               if s.failed_earlier else "")
            + (f", {s.interrupted} interrupted" if s.interrupted else "")
            + (f", {s.busy} left to another process (claimed there)" if s.busy else "")
            + (f", {s.recovered} finished file(s) added to the manifest" if s.recovered else "")
            + f" in {seconds:.1f} s; manifest: {manifest}")


def _plan(job: Job, t0: float) -> int:
    """List what a run would do, one line per item on stdout, without loading any model."""
    counts = {"render": 0, "done": 0, "failed-earlier": 0, "invalid": 0}
    write = sys.stdout.write
    for what, item, detail in job.plan():
        counts[what] += 1
        if what == "render":
            write(f"render  {item.filename}\n")
        elif what == "done":
            write(f"skip    {item.filename} (done)\n")
        elif what == "failed-earlier":
            write(f"skip    {item.filename} (failed earlier: {detail[:120]})\n")
        else:
            write(f"invalid {detail}\n")
    sys.stdout.flush()
    echo_err(f"plan: {counts['render']} to render, {counts['done']} done, "
             f"{counts['failed-earlier']} failed earlier, {counts['invalid']} invalid "
             f"({time.perf_counter() - t0:.1f} s)")
    return EXIT_OK


def run_batch(list_path: Path, out: Path, seeds: Optional[str], config_file: Optional[Path],
              shard: Optional[str], ray: Optional[str], workers: Optional[int],
              retry_failed: bool, plan: bool, quiet: bool, flags: dict[str, Any],
              as_json: bool = False) -> int:
    """The ``batch`` command with its flags parsed by typer; returns the exit code.

    Args:
        list_path, out, seeds, config_file, shard, ray, workers, retry_failed, plan, quiet,
        as_json: the command's own flags (see ``clipforge batch --help``).
        flags: the RunConfig flags (None = not given).
    """
    t0 = time.perf_counter()
    try:
        if flags.get("seed") is not None and seeds is not None:
            raise ConfigError("seeds", "give --seed or --seeds, not both")
        seed_list = parse_seeds(seeds) if seeds is not None else []
        shard_i_n = parse_shard(shard) if shard is not None else (0, 1)
        if workers is not None and ray is None:
            raise ConfigError("workers", "--workers needs --ray (or split the list with "
                              "--shard i/N over several processes)")
        settings = merge(load_settings(config_file) if config_file is not None else None,
                         flag_settings(flags))
        job = prepare(list_path, out, settings, seed_list, shard_i_n, ray=ray, workers=workers,
                      retry_failed=retry_failed, plan=plan)
        if plan:
            return _plan(job, t0)
        swept = job.start()
    except Exception as e:  # noqa: BLE001 - reported by the one mapper
        return report(e)
    status = EXIT_OK
    try:
        with sigterm_as_interrupt(), ProgressBars(quiet) as bars:
            progress = BatchBars(bars, out, as_json)
            if swept:
                progress.note(f"swept {swept} temp file(s) left by an earlier run")
            job.run(progress)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported by the one mapper
        status = report(e, STOPPED)
    s = job.stats
    if status == EXIT_OK and (s.failed or s.failed_earlier):
        status = EXIT_RUNTIME
    echo_err(summary(s, time.perf_counter() - t0, job.manifest))  # the outcome: even with -q
    return status


_OWN = ("list_path", "out", "seeds", "config_file", "shard", "ray", "workers", "retry_failed",
        "plan", "quiet", "as_json")

PARAMS = [
    argument("list_path", Path, ..., metavar="LIST", help="Prompt list: .txt (a prompt a line, "
             "# comments), .csv (a prompt column, other columns override settings) or .jsonl "
             "(settings per line)."),
    option("out", Path, ..., "--out", "-o", help="Output folder (PNGs and manifest.jsonl)."),
    option("seeds", Optional[str], None, help="Seeds for every prompt: 0-3, 1,5,9 (default: "
           "--seed)."),
    option("config_file", Optional[Path], None, "--config", help="Base settings file (.toml or "
           ".json); flags override it."),
    option("shard", Optional[str], None, help="Render only shard i of N (0 <= i < N), e.g. for "
           "Slurm job arrays."),
    option("ray", Optional[str], None, help="Render on Ray: 'auto' (a running cluster, else a "
           "local one) or a cluster ADDRESS. Needs clipforge\\[ray]."),
    option("workers", Optional[int], None, help="Ray actors (default: one per GPU, else per "
           "CPU)."),
    option("retry_failed", bool, False, help="Render again the items an earlier run recorded "
           "as failed."),
    option("plan", bool, False, help="List what would be rendered or skipped; load no model."),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=quiet_option()),
    option("as_json", bool, False, "--json", help="Print one JSON line per image written "
           "(path, seed, seconds, final loss)."),
    *config_parameters(),
]


def _batch(**kwargs: Any) -> None:
    own = {k: kwargs.pop(k) for k in _OWN}
    raise typer.Exit(run_batch(**own, flags=kwargs))


def register(app: typer.Typer) -> None:
    """Add ``batch`` to the app.

    Args:
        app: the ``clipforge`` Typer app.
    """
    app.command("batch")(command(_batch, PARAMS, "Render a prompt list (x seeds) into a folder; "
                                 "re-runs resume, --shard and --ray scale out."))
