"""Run: a RunConfig made ready (device, seed, models, generator, guide), and the calls that run it.

(The module is `runner`, not `run`: a submodule named `run` would shadow `clipforge.run()`.)

Everything that can be wrong with the inputs (size, options, model names, image files) is
checked in :class:`Run`'s constructor, before the first step; iterating it drives the loop of
:mod:`clipforge.loop` (an optimizer for a Generator, the sampler's own steps for a
GuidedSampler). :func:`run` goes to the end and returns a :class:`Result`; :func:`generate`
yields the Steps. The front ends (CLI, batch, studio) all build a Run; none holds its own loop.
"""

from __future__ import annotations

import gc
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from clipforge.config import RunConfig
from clipforge.errors import ConfigError, RunOutOfMemoryError
from clipforge.loop import BestIterate, Step, make_optimizer, optimize, sample_steps
from clipforge.precision import resolve_precision
from clipforge.protocols import GuidedSampler, TextConditioned


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an explicit CUDA request without CUDA fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{name!r} was requested but CUDA is not available on "
                              "this machine; use --device cpu or auto")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", f"{name!r}: only {torch.cuda.device_count()} CUDA "
                              "device(s) present")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "'mps' was requested but is not available")
    return torch.device(name)


def resolve_seed(cfg: RunConfig) -> RunConfig:
    """Replace seed -1 by a concrete random seed (reported and saved by the callers)."""
    return cfg.replace(seed=secrets.randbelow(2**63)) if cfg.seed == -1 else cfg


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's (a RuntimeError) or Python's."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and any(s in str(err) for s in _CPU_OOM))


_CPU_OOM = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory")


def out_of_memory(cfg: RunConfig, step: int) -> RunOutOfMemoryError:
    """The actionable out-of-memory error of a run that failed at ``step`` (0: before any)."""
    at = f"at step {step}" if step else "while building the run"
    return RunOutOfMemoryError(
        f"out of memory {at} ({cfg.width}x{cfg.height}, {cfg.cutn} cutouts, "
        f"{len(cfg.clip)} CLIP model(s)); try a smaller size, fewer cutouts or one CLIP model")


def check_inputs(cfg: RunConfig, device: torch.device | None = None):
    """Check everything about ``cfg`` that needs no model loaded: the device, the generator
    (size, options, the memory it needs), the prompts, the image files and the CLIP names (batch checks its shared
    settings with this, and every :class:`Run` starts with it).

    Args:
        cfg: the settings.
        device: overrides ``cfg.device``.

    Returns:
        ``(device, prompts, init)``: the resolved device, the parsed prompts and the init image
        ((1, 3, H, W) in [0, 1]) or None.

    Raises:
        UsageError: naming the setting (``device``, ``generator_options``, ``init_image``,
            ``clip``, ...).
    """
    from clipforge import registry
    from clipforge.guidance.clip_models import resolve_spec
    from clipforge.guidance.prompts import prompts_from_config
    from clipforge.images import load_image
    from clipforge.memory import check_memory

    device = device or resolve_device(cfg.device)
    registry.check_generator(cfg.generator, cfg.width, cfg.height, cfg.generator_options,
                             init_image=cfg.init_image is not None, steps=cfg.steps)
    check_memory(cfg.generator, cfg.width, cfg.height,
                 {**registry.generator_options(cfg.generator), **cfg.generator_options}, device,
                 getattr(registry.generator_class(cfg.generator), "size_multiple", 1))
    prompts = prompts_from_config(cfg)
    init = load_image(cfg.init_image, field="init_image") if cfg.init_image else None
    for p in prompts:
        if isinstance(p.image, str):  # the guide reads it again; an unreadable one fails here
            load_image(p.image, field="image_prompts")
    for spec in cfg.clip:
        resolve_spec(spec)
    return device, prompts, init


class Run:
    """A RunConfig made ready: models loaded, generator and guide built; iterate for Steps.

    Iterating again continues where the last iteration stopped, with the optimizer state
    intact (``done`` steps are kept), so a pause is leaving the loop and a resume is iterating
    again. ``config`` holds the concrete seed.

    Args:
        cfg: the settings.
        cache: a :class:`~clipforge.guidance.embedders.ModelCache` shared across runs.
        device: overrides ``cfg.device`` (a resolved torch.device).
    """

    def __init__(self, cfg: RunConfig, *, cache=None, device: torch.device | None = None):
        from clipforge import registry
        from clipforge.guidance.augment import Cutouts
        from clipforge.guidance.clip_models import load_ensemble
        from clipforge.guidance.guide import Guide
        from clipforge.images import fit_image

        cfg = resolve_seed(cfg)
        self.device, prompts, init = check_inputs(cfg, device)
        # like the seed, the precision is made concrete so that the PNG records the one used
        self.config = cfg = cfg.replace(precision=resolve_precision(cfg.precision, self.device))
        if cfg.keep_best and issubclass(registry.generator_class(cfg.generator), GuidedSampler):
            raise ConfigError("keep_best", f"generator {cfg.generator!r} is a sampler; keeping "
                              "the best iterate applies to optimized generators only")
        try:
            ensemble = load_ensemble(cfg.clip, self.device, cache)
            for emb, _ in ensemble.members:
                emb.compile_tower(cfg.compile)
            self.generator = registry.build_generator(
                cfg.generator, cfg.width, cfg.height, options=cfg.generator_options,
                generator=torch.Generator().manual_seed(cfg.seed), device=self.device)
            if isinstance(self.generator, TextConditioned):
                self.generator.condition_on(prompts)
            init_target = None
            if init is not None:
                self.generator.init_from(init.to(self.device))
                init_target = fit_image(init, cfg.height, cfg.width, self.generator.render())
            cutouts = Cutouts(ensemble.image_size, cfg.cutn, cfg.cut_pow, augment=cfg.augment)
            self.guide = Guide(ensemble, prompts, cutouts, tv_weight=cfg.tv_weight,
                               range_weight=cfg.range_weight, init_image=init_target,
                               init_weight=cfg.init_weight,
                               generator=torch.Generator().manual_seed((cfg.seed + 1) % 2**63),
                               precision=cfg.precision)
            # a GuidedSampler (diffusion) is sampled, not optimized: it gets no optimizer
            self.opt = None if self.samples else make_optimizer(
                self.generator.parameters(), lr=cfg.lr, optimizer=cfg.optimizer)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            self.generator = self.guide = self.opt = None
            raise out_of_memory(cfg, 0) from None
        self.best = BestIterate() if cfg.keep_best else None  # the best iterate so far
        self.done = 0  # optimizer steps taken so far (a resumed run starts above 0)
        self.step: Step | None = None

    @property
    def samples(self) -> bool:
        """True when the generator is a GuidedSampler (it restarts when iterated again)."""
        return isinstance(self.generator, GuidedSampler)

    def __iter__(self) -> Iterator[Step]:
        cfg = self.config
        if self.samples:
            steps = sample_steps(self.generator, self.guide, cfg.steps,
                                 torch.Generator().manual_seed(cfg.seed))
        else:
            steps = optimize(self.generator, self.guide, cfg.steps, lr=cfg.lr,
                             warmup_steps=cfg.warmup_steps, schedule=cfg.schedule,
                             opt=self.opt, start=self.done, best=self.best)
        try:
            for step in steps:
                self.done = step.i
                self.step = step
                yield step
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            i = (self.step.i + 1) if self.step else 1
            steps.close()
            self.release()
            raise out_of_memory(cfg, i) from None

    def generator_settings(self) -> dict[str, Any]:
        """The generator's effective options: its defaults with the run's options applied
        (what the PNG's ``parameters`` text records: model, sampler steps, prior weight, ...)."""
        from clipforge import registry

        return {**registry.generator_options(self.config.generator),
                **self.config.generator_options}

    @torch.no_grad()
    def image(self) -> Tensor:
        """The generator's current image, (B, 3, H, W) in [0, 1]."""
        return self.generator.render().detach().clamp(0, 1)

    def release(self) -> None:
        """Drop the generator, guide and optimizer and return cached device memory."""
        self.generator = None
        self.guide = None
        self.opt = None
        if self.device.type == "cuda":  # a full collection costs ~0.5 s: only where it pays
            gc.collect()
            torch.cuda.empty_cache()


def generate(cfg: RunConfig, *, cache=None) -> Iterator[Step]:
    """Steps of the run described by ``cfg`` (seed -1 draws a seed; use :class:`Run` to read it)."""
    yield from Run(cfg, cache=cache)


@dataclass(frozen=True)
class Result:
    """What :func:`run` returns: the final image, the concrete settings and timing.

    Shape:
        image: (B, 3, H, W) in [0, 1].
    """

    image: Tensor
    config: RunConfig
    steps: int
    seconds: float
    last: Step | None

    def pil(self, index: int = 0):
        """Image ``index`` of the batch as a PIL RGB image (as diffusers' ``output_type="pil"``)."""
        from clipforge.images import to_pil

        return to_pil(self.image[index])

    @property
    def images(self) -> list:
        """Every image of the batch as PIL (diffusers pipelines' ``.images``)."""
        return [self.pil(i) for i in range(self.image.shape[0])]


def step_end_adapter(fn: Callable[..., Any], pipe: Any = None) -> Callable[[Step], None]:
    """A clipforge callback that calls a diffusers-style ``callback_on_step_end``.

    diffusers calls ``fn(pipe, step_index, timestep, callback_kwargs)`` after each step, with
    ``step_index`` from 0; here ``timestep`` is the 1-based step number and
    ``callback_kwargs`` holds ``image`` (B, 3, H, W in [0, 1]), ``loss`` and ``losses``. The
    dict ``fn`` returns is ignored (a clipforge run's tensors are not swapped from outside);
    to stop early, iterate :func:`generate` and ``break``.

    Args:
        fn: the diffusers-style callback.
        pipe: what ``fn`` receives first (diffusers passes the pipeline).
    """
    def callback(step: Step) -> None:
        fn(pipe, step.i - 1, step.i, {"image": step.image, "loss": step.loss,
                                      "losses": step.losses})

    return callback


def run(cfg: RunConfig, callbacks: Iterable[Callable[[Step], Any]] = (), *, cache=None,
        callback_on_step_end: Callable[..., Any] | None = None) -> Result:
    """Run to the end, calling each callback with every Step; returns the final image.

    Args:
        cfg: the settings.
        callbacks: each is called with every :class:`~clipforge.loop.Step`.
        cache: a ModelCache shared across runs.
        callback_on_step_end: a diffusers-style callback (see :func:`step_end_adapter`).
    """
    t0 = time.perf_counter()
    r = Run(cfg, cache=cache)
    callbacks = list(callbacks)
    if callback_on_step_end is not None:
        callbacks.append(step_end_adapter(callback_on_step_end))
    for step in r:
        for cb in callbacks:
            cb(step)
    return Result(r.image(), r.config, r.step.i if r.step else 0, time.perf_counter() - t0, r.step)


__all__ = ["check_inputs", "Run", "Result", "run", "generate", "step_end_adapter",
           "resolve_device", "resolve_seed"]
