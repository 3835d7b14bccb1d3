"""PNG text chunks: reading them, and the A1111 ``parameters`` text (write, parse, map back).

AUTOMATIC1111's web UI stores a run as one text chunk ``parameters``::

    a red circle
    Negative prompt: a blue square
    Steps: 20, Sampler: adam, Schedule type: constant, Seed: 1, Size: 96x96, Model: shapes

Readers such as sd-parsers and sd-prompt-reader split the last line at commas and colons, so
values with ``,``, ``:`` or ``"`` are JSON-quoted. A1111 has no escaping: a negative prompt with
a line break followed by ``Negative prompt:`` or ``Steps: 99`` would read back as another text.
:func:`format_parameters` writes the plain form whenever :func:`parse_parameters` reads it
back exactly, and otherwise adds one field, ``Text``, with the JSON of ``[prompt,
negative]`` (first on the line, so readers that split it still take the real fields after it),
so ``parse_parameters(format_parameters(p, n, f))`` gives back ``p`` and ``n`` for any text.
:func:`a1111_settings` maps what clipforge can use of an A1111 text (``--from`` a PNG that
A1111 itself wrote) and names what it ignored. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from clipforge.errors import ConfigError

NEGATIVE = "Negative prompt: "
EXACT_TEXT = "Text"
# A1111 key -> clipforge setting, for --from a PNG that carries only A1111 parameters
A1111_SETTINGS = {"Steps": "steps", "Seed": "seed", "Size": "size"}
_FIELD = re.compile(r'\s*([^:,]+):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """All text chunks of a PNG (``tEXt``, ``zTXt``, ``iTXt``).

    Raises:
        ConfigError: (field ``from``) the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():  # a folder, /dev/zero, a FIFO (reading one would block)
        raise ConfigError("from", f"cannot read image {str(path)!r}: not a regular file")
    try:
        with Image.open(path) as img:
            img.load()
            return {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError("from", f"cannot read image {str(path)!r}: {e}") from None


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if re.search(r'[,:"\n\r]', value) else value


def _plain(prompt: str, negative: str, line: str) -> str:
    neg = f"\n{NEGATIVE}{negative}" if negative else ""
    return f"{prompt}{neg}\n{line}"


def format_parameters(prompt: str, negative: str, fields: Mapping[str, Any]) -> str:
    """The A1111 ``parameters`` text of a prompt, a negative prompt and ``Key: value`` fields.

    Args:
        prompt: the prompt, any text.
        negative: the negative prompt ("" writes no ``Negative prompt:`` line, as A1111 does).
        fields: the last line's fields, in order (values become strings; keys must not hold
            ``:`` or ``,``, nor be ``Text``).
    """
    if EXACT_TEXT in fields:
        raise ValueError(f"format_parameters: {EXACT_TEXT!r} is the exact-text field's name")
    line = ", ".join(f"{k}: {_quote(str(v))}" for k, v in fields.items())
    text = _plain(prompt, negative, line)
    parsed = parse_parameters(text)
    if (parsed["prompt"], parsed["negative_prompt"]) != (prompt, negative):
        exact = f"{EXACT_TEXT}: {_quote(json.dumps([prompt, negative], ensure_ascii=False))}"
        text = _plain(prompt, negative, f"{exact}, {line}" if line else exact)
    return text


def parse_parameters(text: str) -> dict[str, str]:
    """Parse an A1111 ``parameters`` text into ``prompt``, ``negative_prompt`` and its fields.

    The last line holds ``Key: value`` pairs (JSON-quoted when they hold commas); the negative
    prompt starts at the last line beginning with ``Negative prompt: ``; a ``Text`` field (see
    :func:`format_parameters`) holds both prompts exactly and wins over the lines above.
    """
    body, _, last = text.rpartition("\n")
    out: dict[str, str] = {}
    for m in _FIELD.finditer(last):
        key, value = m.group(1).strip(), m.group(2).strip()
        try:
            out[key] = json.loads(value) if value.startswith('"') else value
        except json.JSONDecodeError:
            out[key] = value
    prompt, marker, neg = ("\n" + body).rpartition("\n" + NEGATIVE)
    if marker:
        out["prompt"], out["negative_prompt"] = prompt[1:], neg
    else:
        out["prompt"], out["negative_prompt"] = body, ""
    exact = out.pop(EXACT_TEXT, None)
    if exact is not None:
        try:
            pair = json.loads(exact)
        except (json.JSONDecodeError, RecursionError):
            pair = None
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair):
            out["prompt"], out["negative_prompt"] = pair
    return out


def a1111_settings(text: str) -> tuple[dict[str, Any], list[str]]:
    """What clipforge can take from an A1111 ``parameters`` text, and what it ignored.

    Prompt, negative prompt, ``Steps``, ``Seed`` and ``Size`` map to settings; every other
    field (the sampler, CFG scale, the Stable Diffusion model and its hash, ...) means nothing
    to a CLIP-guided run and is named in the second value.

    Returns:
        (partial settings for :func:`clipforge.config.merge`, the names of ignored fields)
    """
    parsed = parse_parameters(text)
    settings: dict[str, Any] = {"prompt": parsed.pop("prompt"),
                                "negative_prompt": parsed.pop("negative_prompt")}
    ignored = []
    for key, value in parsed.items():
        if key in A1111_SETTINGS:
            settings[A1111_SETTINGS[key]] = value
        else:
            ignored.append(key)
    return settings, ignored


def png_settings(path: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
    """The settings a PNG carries: clipforge's own JSON, else its A1111 ``parameters``.

    Returns:
        (raw settings for :func:`clipforge.config.merge`, the A1111 fields that were ignored)

    Raises:
        ConfigError: (field ``from``) unreadable, or neither chunk is present.
    """
    from clipforge.fields import parse_json_object

    chunks = read_png_text(path)
    if "clipforge" in chunks:
        return parse_json_object(chunks["clipforge"], "from"), []
    if "parameters" in chunks:
        return a1111_settings(chunks["parameters"])
    raise ConfigError("from", f"{str(path)!r} carries no clipforge settings and no A1111 "
                      "parameters")


__all__ = ["read_png_text", "format_parameters", "parse_parameters", "a1111_settings",
           "png_settings"]
