"""PNG Info: what a dropped PNG carries (its text chunks, the settings they give) and the controls
those settings fill.

A PNG is read with :mod:`clipforge.pngtext`: clipforge's own ``clipforge`` JSON chunk, else
AUTOMATIC1111's ``parameters`` text (prompt, negative prompt, steps, seed and size map to
settings; the sampler, CFG scale, model hash ... are named as not used). The settings are
checked by :func:`clipforge.config.merge`, as every front end's are. Both the PNG Info tab and
the restore drop of the Generate tab fill the controls through :func:`control_values`.
Nothing here imports gradio.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from clipforge.errors import ConfigError, UsageError
from clipforge.ui.uploads import check_image_size


@dataclass
class PngInfo:
    """What one PNG carries.

    Attributes:
        chunks: every text chunk, by key.
        settings: the checked settings they give (empty when none).
        source: ``clipforge``, ``A1111`` or ``""`` (no settings).
        ignored: the A1111 fields that mean nothing to a CLIP-guided run.
        problem: why there are no settings (empty when there are).
        readable: the file opened as an image.
    """

    chunks: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ignored: list[str] = field(default_factory=list)
    problem: str = ""
    readable: bool = True

    def describe(self) -> str:
        """``a clipforge PNG (seed 42)``, ``an A1111 PNG (seed 7); not used: Sampler, ...``."""
        if not self.settings:
            return f"no settings: {self.problem}"
        seed = f" (seed {self.settings['seed']})" if "seed" in self.settings else ""
        head = f"a clipforge PNG{seed}" if self.source == "clipforge" else f"an A1111 PNG{seed}"
        return head + (f"; not used here: {', '.join(self.ignored)}" if self.ignored else "")

    def text(self) -> str:
        """The text chunks, one ``key:`` heading and its text each (``(none)`` when none)."""
        return "\n\n".join(f"{k}:\n{v}" for k, v in self.chunks.items()) or "(no text chunks)"


def read_info(path: str | os.PathLike | None) -> PngInfo:
    """The text chunks and settings of the PNG at ``path`` (a problem is said, not raised)."""
    from clipforge.config import merge
    from clipforge.pngtext import png_settings, read_png_text

    if not path:
        return PngInfo(problem="no file", readable=False)
    try:
        check_image_size("png", str(path))  # an upload is decoded: bounded like the others
        chunks = read_png_text(path)
    except UsageError as e:
        return PngInfo(problem=str(e), readable=False)
    try:
        raw, ignored = png_settings(path)
        settings = merge(raw)
    except ConfigError as e:
        return PngInfo(chunks, problem=str(e))
    return PngInfo(chunks, settings, "clipforge" if "clipforge" in chunks else "A1111", ignored)


def control_values(info: PngInfo, names: Sequence[str]) -> dict[str, Any]:
    """The values ``info``'s settings give to the controls ``names`` (only those it holds), as
    the controls show them (generator options as JSON text, models as a list)."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in info.settings:
            continue
        value = info.settings[name]
        if name == "generator_options":
            value = json.dumps(dict(value)) if value else ""
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out
