"""Which arithmetic a run uses: ``auto`` | ``fp32`` | ``bf16``, resolved once per device.

bf16 autocast pays where the hardware has bf16 matrix units: CUDA GPUs that support bf16, and
x86 CPUs with AMX-BF16 or AVX512-BF16 (read from the CPU's flags at run time). Measured on a
2-core AMD EPYC with AVX512-BF16 (no AMX): one forward and backward of open_clip's ViT-B-32 over
32 cutouts took 2.5 s under bf16 autocast against 4.5 s in fp32, with the image gradient's
cosine to fp32's at 0.99993 (``benchmarks/step_speed.py --precision`` measures it again).
Elsewhere (ARM, older x86, MPS) ``auto`` stays fp32: without the units bf16 only adds casts.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

from clipforge.errors import ConfigError

# CPU flags (Linux /proc/cpuinfo names) that mean bf16 matrix arithmetic in hardware
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def fast_bf16(device: torch.device) -> bool:
    """True when ``device`` runs bf16 matrix products in hardware (see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return platform.machine().lower() in ("x86_64", "amd64") \
            and any(f in cpu_flags() for f in BF16_CPU_FLAGS)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`fast_bf16`, else ``fp32``; ``bf16`` asked for on a
    device without bf16 at all (an old GPU, MPS) is a ConfigError."""
    if name == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision", f"bf16 was requested but {torch.cuda.get_device_name()} "
                          "does not support it; use fp32 or auto")
    if name == "bf16" and device.type == "mps":
        raise ConfigError("precision", "bf16 autocast is not supported on MPS; use fp32 or auto")
    if name not in ("fp32", "bf16"):
        raise ConfigError("precision", f"{name!r} is not one of auto, fp32, bf16")
    return name


def autocast(precision: str, device: torch.device):
    """The context that runs CLIP in ``precision`` (a resolved one) on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["BF16_CPU_FLAGS", "autocast", "cpu_flags", "fast_bf16", "resolve_precision"]
