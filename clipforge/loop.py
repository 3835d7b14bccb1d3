"""THE loop: gradient descent of a generator's parameters on a Guide's loss, as a Python
generator of :class:`Step` objects.

The loop yields; it never prints, saves, plots or sleeps. Consumers (CLI, UI, batch, your
script) do that with the Steps they receive. Stopping is ``break`` or ``close()``; cleanup runs
in ``finally``. Divergence (a non-finite loss or exploding parameters) is checked on the device
and read back only every ``check_every`` steps and at the end, so there is no host sync per
step unless a consumer asks for a value.
"""

from __future__ import annotations

import contextlib
import gc
import math
import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from clipforge.config import ConfigError, RunConfig

# |parameter| above this is treated as divergence: every generator's parameters live in logit,
# spectrum or latent units where values this large only arise from a runaway learning rate
# (the sigmoid has long saturated, so the loss would stay finite yet meaningless).
PARAM_LIMIT = 1e4


@dataclass(frozen=True)
class Step:
    """One step of the loop.

    Attributes:
        i: step number, 1-based.
        total: number of steps in the run.
        image: the image scored at this step, detached, (B, 3, H, W) in [0, 1].
        loss: total loss, a detached 0-dim tensor (``float(step.loss)`` syncs).
        losses: the named parts of the loss, detached 0-dim tensors.
    """

    i: int
    total: int
    image: Tensor
    loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


class NonFiniteLossError(RuntimeError):
    """The optimization diverged; ``step`` is the first step where it was seen."""

    def __init__(self, step: int, lr: float):
        super().__init__(f"optimization diverged at step {step}: the loss became non-finite or "
                         f"the parameters exploded (|p| > {PARAM_LIMIT:g}); lower the learning "
                         f"rate (lr={lr:g})")
        self.step = step


class RunOutOfMemoryError(RuntimeError):
    """The device ran out of memory; the message says what to reduce."""


def _lr_lambda(steps: int, warmup: int, schedule: str) -> Callable[[int], float]:
    def f(k: int) -> float:  # k = number of scheduler.step() calls so far
        if warmup and k < warmup:
            return (k + 1) / warmup
        span = max(1, steps - warmup)
        p = min(1.0, (k - warmup) / span)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * p))
        if schedule == "linear":
            return 1.0 - p
        return 1.0
    return f


def make_optimizer(params, *, lr: float, optimizer: str = "adam", weight_decay: float = 0.0):
    params = list(params)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError("optimizer", f"{optimizer!r} is not one of adam, adamw")


def optimize(generator, guide, steps: int, *, lr: float = 0.05, optimizer: str = "adam",
             weight_decay: float = 0.0, warmup_steps: int = 0, schedule: str = "constant",
             check_every: int = 10, autocast: bool | None = None,
             opt: torch.optim.Optimizer | None = None, start: int = 0) -> Iterator[Step]:
    """Optimize ``generator.parameters()`` to lower ``guide.loss(generator.render(), t)``.

    Args:
        generator: anything with ``parameters()`` and ``render() -> (B, 3, H, W)`` in [0, 1].
        guide: anything with ``loss(image, t) -> (total, parts)``.
        steps: number of steps; 0 yields nothing.
        lr: peak learning rate.
        optimizer: ``adam`` or ``adamw``.
        weight_decay: weight decay of the optimizer.
        warmup_steps: linear warm-up from 0 to ``lr``.
        schedule: ``constant``, ``cosine`` or ``linear`` decay after the warm-up.
        check_every: read the divergence flag back to the host every this many steps.
        autocast: bf16 autocast for the guide; default on for CUDA only.
        opt: an optimizer to continue with (its state intact), e.g. after a pause.
        start: steps already done (to continue a run; the schedule resumes there).

    Yields:
        one :class:`Step` per optimizer step.

    Raises:
        NonFiniteLossError: naming the first step with a non-finite loss or exploded parameters.
    """
    params = [p for p in generator.parameters() if p.requires_grad]
    if not params:
        raise ValueError("optimize: the generator has no trainable parameters")
    device = params[0].device
    if autocast is None:
        autocast = device.type == "cuda"
    opt = opt or make_optimizer(params, lr=lr, optimizer=optimizer, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, warmup_steps, schedule))
    with warnings.catch_warnings():  # fast-forwarding a resumed schedule, not a misordering
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for _ in range(start):
            sched.step()
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if autocast
           else contextlib.nullcontext())
    try:
        for i in range(start + 1, steps + 1):
            t = (i - 1) / max(1, steps - 1)
            image = generator.render()
            with amp:
                total, parts = guide.loss(image, t)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                pmax = torch.stack([p.detach().abs().max() for p in params]).max()
                bad = ~torch.isfinite(total.detach()) | ~(pmax <= PARAM_LIMIT)
                first_bad = torch.where(bad & (first_bad < 0), i, first_bad)
            if i % check_every == 0 or i == steps:
                k = int(first_bad)
                if k >= 0:
                    raise NonFiniteLossError(k, lr)
            yield Step(i, steps, image.detach(), total.detach(),
                       {k: v.detach() for k, v in parts.items()})
    finally:
        opt.zero_grad(set_to_none=True)


def sample_steps(sampler, guide, steps: int, generator: torch.Generator) -> Iterator[Step]:
    """Drive a GuidedSampler: one :class:`Step` per estimate that ``sampler.sample`` yields.

    The sampler reports each estimate's step number and loss in ``last_index``, ``last_loss``
    and ``last_losses``. Its arguments are checked at this call; closing the returned iterator
    closes the sampler's, which frees the run's tensors.
    """
    it = sampler.sample(guide, steps, generator)

    def drive() -> Iterator[Step]:
        try:
            for image in it:
                yield Step(sampler.last_index, steps, image.detach(), sampler.last_loss,
                           dict(sampler.last_losses))
        finally:
            it.close()
    return drive()


# ---------------------------------------------------------------------------------------------
# from a RunConfig


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


class Run:
    """A RunConfig made ready: models loaded, generator and guide built; iterate for Steps.

    Everything that can be wrong with the inputs (size, options, model names, image files) is
    checked here, before the first step. ``config`` holds the concrete seed.

    Args:
        cfg: the settings.
        cache: a :class:`~clipforge.guidance.embedders.ModelCache` shared across runs.
        device: overrides ``cfg.device`` (a resolved torch.device).
    """

    def __init__(self, cfg: RunConfig, *, cache=None, device: torch.device | None = None):
        from clipforge import registry
        from clipforge.guidance.augment import Cutouts
        from clipforge.guidance.embedders import load_ensemble
        from clipforge.guidance.guide import Guide
        from clipforge.guidance.prompts import prompts_from_config
        from clipforge.images import load_image

        self.config = cfg = resolve_seed(cfg)
        self.device = device or resolve_device(cfg.device)
        registry.check_size(cfg.generator, cfg.width, cfg.height)
        registry.check_options(cfg.generator, cfg.generator_options)
        if cfg.init_image and not hasattr(registry.generator_class(cfg.generator), "init_from"):
            raise ConfigError("init_image", f"generator {cfg.generator!r} cannot start from "
                              "an image")
        prompts = prompts_from_config(cfg)
        init = load_image(cfg.init_image, field="init_image") if cfg.init_image else None
        ensemble = load_ensemble(cfg.clip, self.device, cache)
        seed = cfg.seed
        init_gen = torch.Generator().manual_seed(seed)
        self.generator = registry.build_generator(
            cfg.generator, cfg.width, cfg.height, options=cfg.generator_options,
            generator=init_gen, device=self.device)
        init_target = None
        if init is not None:
            self.generator.init_from(init.to(self.device))
            from clipforge.generators.pixel import _fit
            init_target = _fit(init, cfg.height, cfg.width, self.generator.render())
        cutouts = Cutouts(ensemble.image_size, cfg.cutn, cfg.cut_pow, augment=cfg.augment)
        self.guide = Guide(ensemble, prompts, cutouts, tv_weight=cfg.tv_weight,
                           range_weight=cfg.range_weight, init_image=init_target,
                           init_weight=cfg.init_weight,
                           generator=torch.Generator().manual_seed((seed + 1) % 2**63))
        # a GuidedSampler (diffusion) is sampled, not optimized: it gets no optimizer
        self.opt = None if hasattr(self.generator, "sample") else make_optimizer(
            self.generator.parameters(), lr=cfg.lr, optimizer=cfg.optimizer)
        self.done = 0  # optimizer steps taken so far (a resumed run starts above 0)
        self.step: Step | None = None

    def __iter__(self) -> Iterator[Step]:
        cfg = self.config
        if hasattr(self.generator, "sample"):  # a GuidedSampler (diffusion)
            steps = sample_steps(self.generator, self.guide, cfg.steps,
                                 torch.Generator().manual_seed(cfg.seed))
        else:
            steps = optimize(self.generator, self.guide, cfg.steps, lr=cfg.lr,
                             warmup_steps=cfg.warmup_steps, schedule=cfg.schedule,
                             opt=self.opt, start=self.done)
        try:
            for step in steps:
                self.done = step.i
                self.step = step
                yield step
        except torch.OutOfMemoryError:
            i = (self.step.i + 1) if self.step else 1
            self.release()
            raise RunOutOfMemoryError(
                f"out of memory at step {i} ({cfg.width}x{cfg.height}, {cfg.cutn} cutouts, "
                f"{len(cfg.clip)} CLIP model(s)); try a smaller --size or fewer --cutn") from None

    @torch.no_grad()
    def image(self) -> Tensor:
        """The generator's current image, (B, 3, H, W) in [0, 1]."""
        return self.generator.render().detach().clamp(0, 1)

    def release(self) -> None:
        """Drop the generator and guide and return cached device memory."""
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
    """What :func:`run` returns: the final image, the concrete settings and timing."""

    image: Tensor
    config: RunConfig
    steps: int
    seconds: float
    last: Step | None


def run(cfg: RunConfig, callbacks: Iterable[Callable[[Step], Any]] = (), *, cache=None) -> Result:
    """Run to the end, calling each callback with every Step; returns the final image."""
    t0 = time.perf_counter()
    r = Run(cfg, cache=cache)
    callbacks = list(callbacks)
    for step in r:
        for cb in callbacks:
            cb(step)
    return Result(r.image(), r.config, r.step.i if r.step else 0, time.perf_counter() - t0, r.step)
