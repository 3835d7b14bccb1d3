"""Output targets checked before any work: a run that cannot save its result must not start.

:func:`check_file` refuses a file name the system cannot hold (a part over 255 bytes), an
existing folder, device or FIFO (``/dev/null``), an existing file that is not what we write
(a text file named ``.png``), an existing result without ``overwrite``, an image format
clipforge does not write (``red.jpg``, which would otherwise become a folder), and a folder
that cannot be written (read-only mount, no permission: probed by creating and deleting a
temporary file). :func:`check_folder` does the same for an output folder. Nothing is created
but the probe, which is removed at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from clipforge.errors import ConfigError
from clipforge.outputs import TMP_SUFFIX

NAME_MAX = 255  # bytes in one path part on every common file system
OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif")
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".safetensors": None}


def check_file(path: str | os.PathLike, *, suffix: str = ".png", overwrite: bool = False,
               field: str = "out") -> Path:
    """Refuse an output file that cannot or should not be written; returns it as a Path.

    Args:
        path: the file to write.
        suffix: what it must end in (``.png``, ``.safetensors``).
        overwrite: an existing file of that kind may be replaced.
        field: the setting named in errors.

    Raises:
        ConfigError: naming ``field`` and why.
    """
    p = Path(path)
    _check_names(p, field)
    if p.suffix.lower() != suffix:
        raise ConfigError(field, f"{str(p)!r}: clipforge writes {suffix} files here; "
                          f"use {str(p.with_suffix(suffix))!r}")
    if p.is_dir():
        raise ConfigError(field, f"{str(p)!r} is an existing folder; name a new file, or the "
                          "folder without a file name to write inside it")
    if p.exists() or p.is_symlink():
        if not p.is_file():
            raise ConfigError(field, f"{str(p)!r} exists and is not a regular file (a device, "
                              "a FIFO or a broken link); name a file")
        magic = _MAGIC.get(suffix)
        if magic is not None and not _starts_with(p, magic):
            raise ConfigError(field, f"{str(p)!r} exists and is not a {suffix} file; it is "
                              "left alone (name another file)")
        if not overwrite:
            raise ConfigError(field, f"{str(p)!r} exists; pass --overwrite to replace it")
    _check_writable(p.parent, field)
    return p


def check_folder(path: str | os.PathLike, *, field: str = "out") -> Path:
    """Refuse an output folder that cannot be used (created or written); returns it as a Path.

    Args:
        path: the folder (it may not exist yet).
        field: the setting named in errors.

    Raises:
        ConfigError: naming ``field`` and why.
    """
    p = Path(path)
    _check_names(p, field)
    if p.suffix.lower() in OTHER_IMAGE_SUFFIXES and not p.is_dir():
        raise ConfigError(field, f"{str(p)!r}: clipforge writes PNG files (they carry their "
                          f"settings); use {str(p.with_suffix('.png'))!r}, or a folder")
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise ConfigError(field, f"{str(p)!r} exists and is not a folder")
    _check_writable(p, field)
    return p


def _check_names(p: Path, field: str) -> None:
    for part in p.parts:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise ConfigError(field, f"a name in {str(p)[:80]!r}... is {size} bytes; file "
                              f"systems allow at most {NAME_MAX}")


def _starts_with(p: Path, magic: bytes) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _check_writable(folder: Path, field: str) -> None:
    """Probe the folder (or its nearest existing parent, where it would be created)."""
    existing = folder if str(folder) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, f"{str(existing)!r} is not a folder, so {str(folder)!r} cannot "
                          "be created")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".clipforge-probe.", suffix=TMP_SUFFIX, dir=existing)
    except OSError as e:
        raise ConfigError(field, f"cannot write in {str(existing)!r}: "
                          f"{e.strerror or e}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


__all__ = ["check_file", "check_folder", "NAME_MAX"]
