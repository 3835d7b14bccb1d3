"""The Ray backend: one actor per GPU (or CPU slot), each loading its models once.

Items are streamed to the actors (at most ``in_flight`` queued per actor, so a long list stays
in constant memory); results come back as PNG bytes and are written and recorded by the one
:class:`~clipforge.batch.runner.Batch` of this process, exactly as a sequential run does, so
both give byte-identical files. ``ray`` is imported only here, only when used.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Iterable

from clipforge.batch.items import Item
from clipforge.batch.progress import Progress, Silent
from clipforge.batch.runner import Batch, Rendered, render_item
from clipforge.config import RunConfig
from clipforge.errors import ConfigError, first_line


class RayWorker:
    """A Ray actor's body: loads models once (its own ModelCache), renders the items sent to it.

    Args:
        threads: torch threads of this actor.
    """

    def __init__(self, threads: int):
        import torch

        from clipforge.guidance.clip_models import ModelCache

        torch.set_num_threads(max(1, threads))
        self.cache = ModelCache()

    def render(self, config_json: str) -> Rendered:
        """Render one item (settings as RunConfig JSON) with this actor's loaded models.

        Args:
            config_json: ``RunConfig.to_json()`` of the item.
        """
        return render_item(RunConfig.from_json(config_json), self.cache)


def run_ray(batch: Batch, items: Iterable[Item], progress: Progress = Silent(),
            address: str = "auto", workers: int | None = None, use_gpus: bool = True,
            in_flight: int = 2) -> None:
    """Render on a Ray cluster: one actor per GPU (or per CPU slot), items streamed to them.

    Args:
        batch: the batch (decisions, writes, manifest), written here by one writer.
        items: every item of this shard.
        progress: the observer told about each item.
        address: ``auto`` (a running cluster, else a local one) or a cluster address.
        workers: how many actors (default: one per GPU, else per CPU; never more than slots).
        use_gpus: give each actor a GPU when the cluster has any.
        in_flight: items queued per actor.

    Raises:
        ConfigError: ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("ray", "the Ray backend needs the ray package; run: pip install "
                          "'clipforge[ray]'") from None
    started = False
    if not ray.is_initialized():
        handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False)
        started = True
        with contextlib.suppress(ValueError, TypeError):  # not the main thread / not Python's
            signal.signal(signal.SIGTERM, handler)  # ray.init installed its own (exit 15)
    try:
        _ray_loop(ray, batch, items, progress, workers, use_gpus, in_flight)
    finally:
        if started:
            ray.shutdown()


def _ray_loop(ray, batch: Batch, items: Iterable[Item], progress: Progress,
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
    actor_cls = ray.remote(**options)(RayWorker)
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
                    result = Rendered("error", time.perf_counter() - t0,
                                      error=f"worker died: {first_line(e)}")
                except ray.exceptions.RayError as e:
                    result = Rendered("error", time.perf_counter() - t0,
                                      error=f"{type(e).__name__}: {e}")
                batch.finish(item, result)
                progress.end_item(item, result)
    except BaseException:
        for item, _, _, t0 in pending.values():
            batch.interrupted(item, time.perf_counter() - t0)
        raise
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)


__all__ = ["run_ray", "RayWorker"]
