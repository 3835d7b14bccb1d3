"""THE loop: gradient descent of a generator's parameters on a Guide's loss, as a Python
generator of :class:`Step` objects.

The loop yields; it never prints, saves, plots or sleeps. Consumers (CLI, UI, batch, your
script) do that with the Steps they receive. Stopping is ``break`` or ``close()``; cleanup runs
in ``finally``. Divergence (a non-finite loss or exploding parameters) is checked on the device
and read back only every ``check_every`` steps and at the end, so there is no host sync per
step unless a consumer asks for a value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from clipforge.errors import ConfigError, NonFiniteLossError, RunOutOfMemoryError

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


def diverged(step: int, lr: float, initial: bool = False) -> NonFiniteLossError:
    """The error for a run whose loss or parameters blew up first at ``step``; ``initial``:
    the very first loss, before any update, was already non-finite (not the learning rate)."""
    if initial:
        return NonFiniteLossError(step, "the loss is not finite at step 1, on the initial image "
                                  "before any update: check the generator's options and the "
                                  "prompt weights (the learning rate has not acted yet)")
    return NonFiniteLossError(step, f"optimization diverged at step {step}: the loss became "
                              f"non-finite or the parameters exploded (|p| > {PARAM_LIMIT:g}); "
                              f"lower the learning rate (lr={lr:g})")


def lr_factor(k: int, steps: int, warmup: int = 0, schedule: str = "cosine") -> float:
    """Learning-rate multiplier after ``k`` steps: linear warm-up, then the schedule's decay.

    The one schedule of the project: the loop (``schedule`` of a RunConfig) and CLIP training
    (warm-up then cosine, as open_clip trains) both use it.

    Args:
        k: steps taken so far (0-based index of the step about to run).
        steps: total steps.
        warmup: warm-up steps (the multiplier grows linearly to 1 over them).
        schedule: ``constant``, ``cosine`` (to 0) or ``linear`` (to 0) after the warm-up.
    """
    if warmup and k < warmup:
        return (k + 1) / warmup
    p = min(1.0, (k - warmup) / max(1, steps - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - p
    return 1.0


def make_optimizer(params, *, lr: float, optimizer: str = "adam", weight_decay: float = 0.0):
    """Adam or AdamW over ``params``."""
    params = list(params)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError("optimizer", f"{optimizer!r} is not one of adam, adamw")


class BestIterate:
    """The parameters of the iterate the guide scored best so far (lowest loss), kept on the
    device without a host sync; ``restore`` puts them back into the generator.

    The loop offers every iterate (its parameters as they were when the image was rendered,
    and the guide's loss of that image, without the generator's own prior); a Run keeps one
    across pauses and checkpoints (``state_dict`` / ``load_state_dict``). Origin: ReNO keeps the
    best iterate by reward; here it serves every optimized generator.
    """

    def __init__(self) -> None:
        self.score: Tensor | None = None
        self.params: list[Tensor] = []

    @torch.no_grad()
    def offer(self, score: Tensor, params: list[Tensor]) -> None:
        """Keep ``params`` (copied) when ``score`` is below the best so far (NaN never is)."""
        s = score.detach().float()
        if self.score is None:
            self.score = torch.where(torch.isfinite(s), s, torch.full_like(s, math.inf))
            self.params = [p.detach().clone() for p in params]
            return
        better = s < self.score
        self.score = torch.where(better, s, self.score)
        for kept, p in zip(self.params, params):
            kept.copy_(torch.where(better, p.detach(), kept))

    @torch.no_grad()
    def restore(self, params: list[Tensor]) -> None:
        """Copy the best parameters into ``params`` (nothing when none was offered)."""
        for p, kept in zip(params, self.params):
            p.copy_(kept)

    def state_dict(self) -> dict:
        return {"score": self.score, "params": list(self.params)}

    def load_state_dict(self, state: dict, device) -> None:
        score = state.get("score")
        self.score = None if score is None else score.to(device)
        self.params = [p.to(device) for p in state.get("params", [])]


def optimize(generator, guide, steps: int, *, lr: float = 0.05, optimizer: str = "adam",
             weight_decay: float = 0.0, warmup_steps: int = 0, schedule: str = "constant",
             check_every: int = 10,
             opt: torch.optim.Optimizer | None = None, start: int = 0,
             best: BestIterate | None = None) -> Iterator[Step]:
    """Optimize ``generator.parameters()`` to lower ``guide.loss(generator.render(), t)``.

    A :class:`~clipforge.protocols.Regularized` generator's own loss is added to the guide's;
    a :class:`~clipforge.protocols.Projected` one is projected after every optimizer step.

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
        opt: an optimizer to continue with (its state intact), e.g. after a pause.
        start: steps already done (to continue a run; the schedule resumes there).
        best: keep the best iterate by the guide's score here; after the last step the
            generator holds it (so its ``render()`` is the result).

    Yields:
        one :class:`Step` per optimizer step.

    Raises:
        NonFiniteLossError: naming the first step with a non-finite loss or exploded parameters.
    """
    from clipforge.protocols import Projected, Regularized

    params = [p for p in generator.parameters() if p.requires_grad]
    regularized, projected = isinstance(generator, Regularized), isinstance(generator, Projected)
    if not params:
        raise ValueError("optimize: the generator has no trainable parameters")
    device = params[0].device
    opt = opt or make_optimizer(params, lr=lr, optimizer=optimizer, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, steps, warmup_steps, schedule))
    with warnings.catch_warnings():  # fast-forwarding a resumed schedule, not a misordering
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for _ in range(start):
            sched.step()
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    initial_bad = torch.zeros((), dtype=torch.bool, device=device)
    try:
        for i in range(start + 1, steps + 1):
            t = (i - 1) / max(1, steps - 1)
            image = generator.render()
            total, parts = guide.loss(image, t)   # in the guide's own precision
            if i == 1:  # no sync: read only when the run has diverged
                initial_bad = ~torch.isfinite(total.detach())
            if best is not None:  # before the step changes the parameters that made the image
                best.offer(total, params)
            if regularized:
                prior, prior_parts = generator.regularizer()
                total = total + prior
                parts = {**parts, **prior_parts}
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            if projected:
                generator.project()
            with torch.no_grad():
                pmax = torch.stack([p.detach().abs().max() for p in params]).max()
                bad = ~torch.isfinite(total.detach()) | ~(pmax <= PARAM_LIMIT)
                first_bad = torch.where(bad & (first_bad < 0), i, first_bad)
            if i % check_every == 0 or i == steps:
                k = int(first_bad)
                if k >= 0:
                    raise diverged(k, lr, initial=k == 1 and bool(initial_bad))
            if i == steps and best is not None:
                best.restore(params)
            yield Step(i, steps, image.detach(), total.detach(),
                       {k: v.detach() for k, v in parts.items()})
    finally:
        opt.zero_grad(set_to_none=True)


def sample_steps(sampler, guide, steps: int, generator: torch.Generator) -> Iterator[Step]:
    """Drive a :class:`~clipforge.protocols.GuidedSampler`: one :class:`Step` per
    :class:`~clipforge.protocols.Estimate` that ``sampler.sample`` yields.

    The sampler's arguments are checked at this call; closing the returned iterator closes the
    sampler's, which frees the run's tensors.
    """
    it = sampler.sample(guide, steps, generator)

    def drive() -> Iterator[Step]:
        try:
            for est in it:
                yield Step(est.index, steps, est.image.detach(), est.loss, dict(est.parts))
        finally:
            it.close()
    return drive()


__all__ = ["Step", "BestIterate", "optimize", "sample_steps", "make_optimizer", "lr_factor", "PARAM_LIMIT",
           "NonFiniteLossError", "RunOutOfMemoryError"]
