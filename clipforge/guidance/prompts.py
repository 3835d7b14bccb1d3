"""Weighted, scheduled text and image prompts, and the prompt syntax.

Syntax (one string, the CLI and UI use it):

- ``|`` separates parts: ``"a lighthouse | stormy sea"``;
- a trailing ``:W`` right after a part gives its weight (a number, no space after the colon):
  ``"a lighthouse:1.5 | fog:-0.5"``; a negative weight steers away;
- ``\\|``, ``\\:`` and ``\\\\`` stand for a literal ``|``, ``:`` and backslash, so
  ``"at 12\\:30"`` is one unweighted part. A colon followed by a space is plain text:
  ``"Steps: 5, Seed: 1"`` is one part with weight 1.

Parts whose text is empty after stripping are dropped. Weights are scheduled with ``start`` /
``stop`` (progress in [0, 1]) through the Python API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clipforge.config import ConfigError
from clipforge.fields import is_blank

MAX_WEIGHT = 1e4  # larger weights overflow the loss (and no prompt needs 10000x another)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Prompt:
    """One text or image prompt with a weight active over a window of progress.

    Args:
        text: text to steer toward (or away from, with a negative weight).
        image: an image file path, or a tensor (3, H, W) / (1, 3, H, W) in [0, 1].
        weight: multiplier of this prompt's spherical distance; negative means "away from".
        start: progress t in [0, 1] from which the prompt is active.
        stop: progress t in [0, 1] up to which the prompt is active.
    """

    text: str | None = None
    image: Any = None
    weight: float = 1.0
    start: float = 0.0
    stop: float = 1.0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ConfigError("prompt", "a Prompt needs exactly one of text or image")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or \
                not abs(self.weight) <= MAX_WEIGHT:
            raise ConfigError("prompt", f"weight {self.weight!r} of {self.label!r} is out of "
                              f"range; allowed: -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}")
        if not (0.0 <= self.start < self.stop <= 1.0):
            raise ConfigError("prompt start/stop",
                              f"need 0 <= start < stop <= 1, got {self.start}, {self.stop}")

    def weight_at(self, t: float) -> float:
        """The weight at progress ``t`` in [0, 1] (0 outside the active window)."""
        active = self.start <= t < self.stop or (t >= 1.0 and self.stop >= 1.0)
        return self.weight if active else 0.0

    @property
    def label(self) -> str:
        """Short name used for loss parts and plots."""
        if self.text is not None:
            name = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        else:
            name = f"image:{self.image}" if isinstance(self.image, str) else "image"
        return name


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash escape; escapes are kept for later."""
    parts, buf, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\|:])", r"\1", text)


def _split_weight(part: str) -> tuple[str, float | None]:
    """``"fog:-0.5"`` -> ("fog", -0.5); no weight -> (part, None). Escaped colons are text."""
    pieces = _split_unescaped(part, ":")
    if len(pieces) < 2:
        return part, None
    tail = pieces[-1].rstrip()
    if _NUMBER.fullmatch(tail):
        return ":".join(pieces[:-1]), float(tail)
    return part, None


def parse_prompt(text: str, *, negate: bool = False) -> list[Prompt]:
    """Parse the prompt syntax (see the module docstring) into text prompts.

    Args:
        text: e.g. ``"a lighthouse:1.5 | fog:-0.5"``.
        negate: multiply every weight by -1 (for a negative prompt).

    Returns:
        One Prompt per non-empty part, in order.
    """
    prompts = []
    for raw in _split_unescaped(text, "|"):
        body, weight = _split_weight(raw)
        body = _unescape(body).strip()
        if is_blank(body):  # nothing visible (zero-width characters only): no prompt
            continue
        w = 1.0 if weight is None else weight
        prompts.append(Prompt(text=body, weight=-w if negate else w))
    return prompts


def parse_image_prompt(spec: str) -> Prompt:
    """``"path/to/a.png"`` or ``"path/to/a.png:0.5"`` -> an image Prompt (file read later)."""
    path, weight = _split_weight(spec)
    return Prompt(image=path, weight=1.0 if weight is None else weight)


def prompts_from_config(cfg) -> list[Prompt]:
    """All prompts of a RunConfig: text, negative text, then image prompts."""
    prompts = parse_prompt(cfg.prompt) + parse_prompt(cfg.negative_prompt, negate=True)
    prompts += [parse_image_prompt(s) for s in cfg.image_prompts]
    if not any(p.weight != 0 for p in prompts):
        raise ConfigError("prompt", "prompt is empty (every part has weight 0 or no text)")
    return prompts


def escape(text: str) -> str:
    """Escape a literal string so that :func:`parse_prompt` reads it back as one part."""
    return re.sub(r"([\\|:])", r"\\\1", text)
