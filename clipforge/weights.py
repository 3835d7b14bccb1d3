"""Loading weight files safely, with the format decided by content rather than by file name.

safetensors files are read with ``safetensors``; PyTorch zip and legacy pickle files with
``torch.load(weights_only=True)``, which refuses to run code hidden in a pickle (a malicious
``__reduce__``). Anything else is refused with the reason.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from clipforge.errors import WeightsError, first_line


def sniff_format(path: str | os.PathLike) -> str:
    """Return ``"safetensors"``, ``"torch-zip"`` or ``"pickle"`` from the file's first bytes."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist or is not a file")
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise WeightsError(f"weights file {str(path)!r} is empty or truncated")
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 2 <= n <= p.stat().st_size - 8:
        return "safetensors"
    raise WeightsError(f"weights file {str(path)!r} is not safetensors, a PyTorch checkpoint, or "
                       "a pickle (first bytes " + head[:8].hex() + ")")


def torch_load(path: str | os.PathLike, device: str = "cpu"):
    """``torch.load(weights_only=True)`` of the file's content, whatever its name.

    Given a path, torch picks its reader by the file name (a PyTorch zip named
    ``.safetensors`` goes to the safetensors reader and fails); given the open file, it reads
    the content, which :func:`sniff_format` has already identified.

    Args:
        path: a PyTorch zip or legacy pickle checkpoint.
        device: ``map_location``.
    """
    import torch

    with open(path, "rb") as f:
        return torch.load(f, map_location=device, weights_only=True)


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict:
    """Read a state dict from a safetensors file or a PyTorch checkpoint, never running code.

    Nested ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints and DataParallel
    ``module.`` prefixes are unwrapped.
    """
    fmt = sniff_format(path)
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device=device)
        else:
            sd = torch_load(path, device)
    except WeightsError:
        raise
    except Exception as e:  # torch's UnpicklingError, safetensors' errors, zip errors
        raise WeightsError(f"cannot load weights file {str(path)!r} ({fmt}): "
                           f"{first_line(e, 300)}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"weights file {str(path)!r} holds no state dict")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def safetensors_metadata(path: str | os.PathLike) -> dict:
    """The ``__metadata__`` strings of a safetensors file (empty if none)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return dict(header.get("__metadata__") or {})
