"""Exact resume of one long run: save a :class:`~clipforge.runner.Run` mid-way, continue later.

A checkpoint holds everything the rest of the run depends on: the generator's parameters
and buffers (for ``noise``: the starting and injected noises), the optimizer's state (Adam
moments and step counts), the best iterate so far (``keep_best``), the cutout generator's
RNG state (``torch.Generator.get_state()``), the number of steps done and the settings. It
is written atomically with ``torch.save`` and read back with ``torch.load(weights_only=True)``
(plain tensors, numbers and strings; no code runs on load). A run resumed from step k ends
pixel-identical to the uninterrupted run with the same seed on the same device.

:func:`write_state` / :func:`read_state` are that format's one writer and reader (a dict with
a ``format`` marker and required keys); the training checkpoints of
:mod:`clipforge.training.trainer` use them too.

Usage::

    run = Run(cfg)
    for step in run:
        if step.i % 50 == 0:
            save_checkpoint(run, "fox.ckpt")
    ...
    run = Run(cfg); restore(run, load_checkpoint("fox.ckpt"))
    for step in run: ...            # continues at step k + 1
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from clipforge.config import RunConfig
from clipforge.errors import ConfigError, first_line

FORMAT = "clipforge-checkpoint"
VERSION = 1
# settings that may differ between the saved and the resuming run: they change where the
# run executes or what is kept for display, not the pixels it computes
_FREE = ("device", "save_every", "save_video")
_REQUIRED = ("config", "step", "generator", "optimizer", "cutout_rng")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (tensors on the CPU).

    Attributes:
        config: the settings of the saved run (with its concrete seed).
        step: optimizer steps done when it was saved.
        generator: the generator's ``state_dict()``.
        optimizer: the optimizer's ``state_dict()``.
        cutout_rng: the cutout generator's ``get_state()`` (a uint8 tensor).
        best: the best iterate's ``state_dict()`` (``keep_best`` runs), else None.
    """

    config: RunConfig
    step: int
    generator: dict[str, Any]
    optimizer: dict[str, Any]
    cutout_rng: Any
    best: dict[str, Any] | None = None


def check_supported(run) -> None:
    """Raise ConfigError unless ``run`` is an optimized generator (a diffusion sampler keeps
    its state inside the sampling loop, which a checkpoint does not capture)."""
    if run.samples or getattr(run, "opt", None) is None:
        raise ConfigError("checkpoint_every", f"generator {run.config.generator!r} is a sampler; "
                          "only optimized generators (pixel, fourier, latent, ...) can be "
                          "checkpointed and resumed")


def write_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write a checkpoint dict with ``torch.save`` atomically (temporary file, then rename).

    The one writer of run checkpoints and training checkpoints (:mod:`clipforge.training`).

    Args:
        path: the checkpoint file (its folder must exist).
        state: tensors, numbers, strings and containers of them, with a ``format`` marker.
    """
    import torch

    from clipforge.outputs import atomic_path

    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def read_state(path: str | os.PathLike, *, format: str, required: Sequence[str],
               error: Callable[[str], Exception], version: int = 1,
               unmarked: bool = False) -> dict[str, Any]:
    """Read a checkpoint dict safely (``weights_only=True``) and check its marker and keys.

    The one reader of run and training checkpoints; each caller names its own format and
    turns a problem into its own error type with ``error``.

    Args:
        path: the checkpoint file.
        format: the ``format`` marker the dict must carry.
        required: keys the dict must hold.
        error: makes the exception to raise from a message (the message does not name
            ``path``; ``error`` adds it where wanted).
        version: the newest ``version`` this code reads (a marked file must carry one).
        unmarked: also accept a dict without any ``format`` key (files written before the
            marker existed), when it holds the required keys.

    Raises:
        whatever ``error`` returns: the file is missing, unreadable, unsafe, of another
            format or a newer version, or lacks a required key.
    """
    from clipforge.weights import torch_load

    p = Path(path)
    if not p.is_file():
        raise error("checkpoint does not exist or is not a file")
    try:
        state = torch_load(p)
    except Exception as e:  # noqa: BLE001 - unpickling refused, corrupt zip, truncated file
        raise error(f"cannot read checkpoint ({first_line(e)})") from None
    marker = state.get("format") if isinstance(state, dict) else None
    if not isinstance(state, dict) or marker != format and not (unmarked and marker is None):
        raise error(f"not a {format.replace('-', ' ')}")
    found = state.get("version", 1 if marker is None else None)  # only unmarked files lack it
    if not isinstance(found, int) or found > version:
        raise error(f"checkpoint version {found!r} is newer than this clipforge reads ({version})")
    missing = [k for k in required if k not in state]
    if missing:
        raise error(f"incomplete checkpoint (no {', '.join(missing)})")
    return state


def run_state(run) -> dict[str, Any]:
    """A Run's resumable state as a checkpoint dict (tensors on the CPU, plain data)."""
    check_supported(run)
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": run.config.to_json(),
        "step": int(run.done),
        "generator": {k: v.detach().cpu() for k, v in run.generator.state_dict().items()},
        "optimizer": _to_cpu(run.opt.state_dict()),
        "cutout_rng": run.guide.generator.get_state(),
        # the best iterate so far (keep_best): its score and parameters
        "best": _to_cpu(run.best.state_dict()) if getattr(run, "best", None) else None,
    }


def checkpoint_bytes(run) -> bytes:
    """Serialize a Run's resumable state (``torch.save`` format, only tensors and plain data)."""
    import torch

    buf = io.BytesIO()
    torch.save(run_state(run), buf)
    return buf.getvalue()


def save_checkpoint(run, path: str | os.PathLike) -> Path:
    """Write ``run``'s state to ``path`` atomically (a crash never leaves half a checkpoint).

    Args:
        run: a :class:`~clipforge.runner.Run` between two steps (e.g. right after a Step).
        path: the checkpoint file.
    """
    return write_state(path, run_state(run))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint safely (``weights_only=True``: a malicious pickle is refused).

    Raises:
        ConfigError: (field ``resume``) the file is missing, not a clipforge checkpoint, or of
            a newer version.
    """
    def error(message: str) -> ConfigError:
        return ConfigError("resume", f"{str(path)!r}: {message}")

    state = read_state(path, format=FORMAT, required=_REQUIRED, error=error, version=VERSION)
    try:
        return Checkpoint(RunConfig.from_json(state["config"]), int(state["step"]),
                          state["generator"], state["optimizer"], state["cutout_rng"],
                          state.get("best"))
    except (KeyError, TypeError) as e:
        raise error(f"incomplete checkpoint ({e})") from None


def check_compatible(saved: RunConfig, cfg: RunConfig) -> None:
    """Raise ConfigError naming the settings that differ (other than device and save_every)."""
    a, b = saved.to_dict(), cfg.to_dict()
    diff = [k for k in a if k not in _FREE and a[k] != b.get(k)]
    if diff:
        shown = ", ".join(f"{k}={a[k]!r} (now {b.get(k)!r})" for k in diff[:4])
        raise ConfigError("resume", f"the checkpoint was saved with other settings: {shown}; "
                          "resume with the saved settings (omit the options to reuse them)")


def restore(run, ckpt: Checkpoint) -> None:
    """Load a checkpoint into a freshly built Run with the same settings; the next Step the
    run yields is ``ckpt.step + 1``.

    Raises:
        ConfigError: the settings differ, or the checkpoint is past the run's last step.
    """
    import torch

    check_supported(run)
    check_compatible(ckpt.config, run.config)
    if not 0 <= ckpt.step <= run.config.steps:
        raise ConfigError("resume", f"checkpoint is at step {ckpt.step}; the run has "
                          f"{run.config.steps} steps")
    run.generator.load_state_dict(ckpt.generator)
    run.opt.load_state_dict(ckpt.optimizer)  # moves the state to the parameters' device
    rng = ckpt.cutout_rng
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise ConfigError("resume", "checkpoint has no valid cutout RNG state")
    run.guide.generator.set_state(rng)
    if getattr(run, "best", None) is not None and ckpt.best is not None:
        run.best.load_state_dict(ckpt.best, run.device)
    run.done = ckpt.step


def _to_cpu(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def default_path(png: str | os.PathLike) -> Path:
    """The checkpoint kept beside an output: ``fox-s0.png`` -> ``fox-s0.ckpt``."""
    return Path(png).with_suffix(".ckpt")


__all__ = ["Checkpoint", "check_supported", "save_checkpoint", "load_checkpoint", "restore",
           "check_compatible", "checkpoint_bytes", "run_state", "write_state", "read_state",
           "default_path"]
