"""The pre-flight memory check: refuse a size that cannot fit on this machine before any work.

A generator may declare ``bytes_per_pixel``: the peak memory a run adds per output pixel
(parameters, optimizer state, the rendered image and its gradients, the guide's work on it),
measured as the growth of peak RSS between two sizes on the CPU (``VmHWM``, 2 steps, 4
cutouts; the cutout count adds almost nothing: 4 vs 32 at 768 px differ by 7 MB):

- pixel: 256 -> 768 px: 430 B/px; 256 -> 1280 px: 375 B/px;
- fourier: 256 -> 768 px: 232 B/px;
- diffusion with the bundled ``shapes-ddpm``: 64 -> 192 px: about 5,000 B/px (other models
  declare nothing: their need depends on the model, so only the run itself can tell).

Building a run adds about ``RUN_BASE_BYTES`` whatever its size (the CLIP model, open_clip,
thread pools: the address space grew from 3.26 to 3.77 GB building a 64 px shapes run after
the check), so that is needed too. The lower measurement is declared, so the check refuses only what surely cannot fit; what
slips through and still runs out of memory fails with the same actionable
:class:`~clipforge.errors.RunOutOfMemoryError` as CUDA's (see :mod:`clipforge.runner`).
The memory available is CUDA's free memory, or on the CPU the smaller of the kernel's
``MemAvailable`` and what the address-space limit (``ulimit -v``) leaves this process.
"""

from __future__ import annotations

import math
import resource
from typing import Any

from clipforge.errors import ConfigError

RUN_BASE_BYTES = 512 * 2**20  # what building any run adds (measured: see above)


def needed_bytes(name: str, width: int, height: int, options: dict[str, Any],
                 batch: int = 1) -> int | None:
    """The memory a run of this generator and size adds, or None when it declares none.

    Args:
        name: the registered generator.
        width: image width in pixels.
        height: image height in pixels.
        options: its options (a declaration may depend on them).
        batch: images rendered at once.
    """
    from clipforge.registry import generator_class

    per_pixel = getattr(generator_class(name), "bytes_per_pixel", None)
    if callable(per_pixel):
        per_pixel = per_pixel(options)
    return None if per_pixel is None else int(per_pixel * width * height * batch)


def available_bytes(device) -> int | None:
    """Free memory for a run on ``device`` (a torch.device), or None when unknown."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                size = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmSize:"))
            free = min(free if free is not None else limit, max(0, limit - size))
    except (OSError, ValueError, StopIteration):
        return free
    return free


def check_memory(name: str, width: int, height: int, options: dict[str, Any], device,
                 multiple: int = 1, available: int | None = None) -> None:
    """Refuse a size whose run needs more memory than ``device`` has free (exit 2).

    Args:
        name: the registered generator.
        width: image width in pixels.
        height: image height in pixels.
        options: its options.
        device: where the run would go (a torch.device).
        multiple: the generator's size multiple (for the largest size named).
        available: free bytes (default: :func:`available_bytes`).

    Raises:
        ConfigError: (field ``size``) naming the need, the free memory and the largest size
            of the same shape that fits.
    """
    need = needed_bytes(name, width, height, options)
    free = available if available is not None else available_bytes(device)
    if need is None or free is None or need + RUN_BASE_BYTES <= free:
        return
    where = "GPU" if device.type == "cuda" else "host"
    head = (f"{width}x{height} with generator {name!r} needs about "
            f"{_gb(need + RUN_BASE_BYTES)} of {where} memory, and {_gb(free)} is free here")
    scale = math.sqrt(max(0, free - RUN_BASE_BYTES) / need)
    side = [int(s * scale) // multiple * multiple for s in (width, height)]
    if min(side) < 8:
        raise ConfigError("size", f"{head}; no size fits (free memory, or use a GPU)")
    raise ConfigError("size", f"{head}; the largest size that fits is about "
                      f"{side[0]}x{side[1]} (or free memory, or use a GPU)")


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


__all__ = ["needed_bytes", "available_bytes", "check_memory"]
