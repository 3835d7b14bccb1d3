"""What the studio accepts as files from the page: uploads (bounded) and never a server path.

:func:`upload_path` turns what gradio passes for a file into its server path;
:func:`check_image_size` refuses uploads that would decode to too many pixels, reading only the
header; :func:`check_no_server_paths` refuses generator options that name files on the server.
Nothing here imports gradio; a refusal is a :class:`~clipforge.errors.UsageError` whose
``field`` names the control (the message names it too).
"""

from __future__ import annotations

import os
from typing import Any

from clipforge.errors import UsageError

UI_MAX_IMAGE_PIXELS = 4096 * 4096  # uploads are decoded while checking; keep that bounded


def upload_path(value: Any) -> str | None:
    """The server path of an upload, or None when there is none.

    Args:
        value: what gradio passes for a file: a str path, a dict or an object with ``.path``.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path")
    return str(getattr(value, "path", value))


def check_no_server_paths(options: dict[str, Any]) -> None:
    """Generator options from the page may name hub models, never files on the server."""
    for key, value in options.items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if not isinstance(v, str):
                continue
            if (os.path.isabs(v) or v.startswith((".", "~")) or ".." in v or "\\" in v
                    or os.path.lexists(v)):
                raise UsageError(f"generator_options: {key}={v!r} names a "
                                 "file or folder; the studio accepts model names only (the "
                                 "server's operator can offer local models)",
                                 "generator_options")


def check_image_size(field_name: str, path: str) -> None:
    """Refuse uploads that decode to more than UI_MAX_IMAGE_PIXELS, reading only the header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception:  # unreadable: load_image names the reason
        return
    if w * h > UI_MAX_IMAGE_PIXELS:
        raise UsageError(f"{field_name}: {w}x{h} is larger than the studio's "
                         f"{UI_MAX_IMAGE_PIXELS:,}-pixel limit for uploads", field_name)


