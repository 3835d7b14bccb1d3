"""Typed, ranged settings: coercion and checks for dataclass fields that carry metadata.

A field's metadata holds its ``help`` and optionally ``min``, ``min_exclusive``, ``max``,
``choices`` and ``split_commas``; its default gives its type. :func:`coerce` turns JSON, CSV
and flag values into that type without silently rounding, :func:`check_field` checks one value
on its own. RunConfig's fields use this (:mod:`clipforge.config`), and so do the generators'
declared options (:mod:`clipforge.registry`), so "a number in a range" is checked one way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from typing import Any, Mapping

from clipforge.errors import ConfigError

MAX_PROMPT_CHARS = 1_000_000  # longer input is refused outright; CLIP reads ~77 tokens anyway
MAX_OPTION_DEPTH = 8  # options are flat settings; deeper nesting is an attack or a typo


class FrozenDict(dict):
    """A dict that cannot be changed after construction (RunConfig's generator options).

    A ``dict`` subclass, so JSON, ``isinstance(x, dict)`` and pickling work as for a dict.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("RunConfig.generator_options is read-only; use cfg.replace("
                        "generator_options={...})")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def parse_json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``json.loads`` that must give an object; malformed or absurdly nested JSON is a ConfigError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(what, f"not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(what, "JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(what, f"JSON must be an object of settings, got {type(data).__name__}")
    return data


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"256"`` (square) or ``"320x256"`` (width x height) into (width, height)."""
    s = str(text).strip().lower()
    parts = s.split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ConfigError("size", f"expected N or WxH with whole numbers, got {text!r}")
    return int(parts[0]), int(parts[-1])


def default_of(f: dataclasses.Field) -> Any:
    """The field's default (calling its default factory)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn JSON/CSV-ish values into the field's type without silently rounding."""
    name, default = f.name, default_of(f)
    if isinstance(default, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(name, f"expected a whole number, got {value!r}") from None
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(name, f"expected a number, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):  # a CSV cell or a flag: comma-separated
            value = value.split(",")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {value!r:.60}")
        if f.metadata.get("split_commas"):  # `--clip a,b --clip c`
            value = [s.strip() for v in value for s in (v.split(",") if isinstance(v, str)
                                                         else [v])]
        return tuple(v for v in value if not (isinstance(v, str) and not v.strip()))
    if isinstance(default, dict):
        if isinstance(value, str):
            value = parse_json_object(value, name) if value.strip() else {}
        if isinstance(value, dict) and _depth(value) > MAX_OPTION_DEPTH:
            raise ConfigError(name, f"nested more than {MAX_OPTION_DEPTH} levels deep")
    return value


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_OPTION_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, (list, tuple)):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing to read: only whitespace and invisible format
    characters (zero-width spaces and joiners, byte-order marks: Unicode category Cf)."""
    return not "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()


def check_text(name: str, text: str) -> None:
    """Reject text that cannot be stored or tokenised safely (NUL, lone surrogates, absurd size)."""
    if not isinstance(text, str):
        raise ConfigError(name, f"expected text, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise ConfigError(name, f"is {len(text):,} characters; the maximum is {MAX_PROMPT_CHARS:,}")
    if "\x00" in text:
        raise ConfigError(name, "contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(name, "contains a lone surrogate (not valid Unicode text)") from None


def _num(x: float) -> str:
    """A limit as a person reads it: whole numbers exactly (2**63 - 1, not 9.22337e+18)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def range_text(meta: Mapping[str, Any]) -> str:
    """The allowed range of a field's metadata, e.g. ``>= 8 and <= 4096``."""
    lo, hi = meta.get("min", meta.get("min_exclusive")), meta.get("max")
    parts = [f"{'>' if 'min_exclusive' in meta else '>='} {_num(lo)}"] if lo is not None else []
    parts += [f"<= {_num(hi)}"] if hi is not None else []
    return " and ".join(parts)


def check_field(f: dataclasses.Field, value: Any) -> None:
    """Check one field's value on its own (type, range, choices, text); ConfigError if bad."""
    check_value(f.name, value, default_of(f), f.metadata)


def check_option(name: str, value: Any, rule: Mapping[str, Any], default: Any = None) -> None:
    """Check one generator option against its declared rule, strictly (JSON types, no coercion).

    The option's type is ``rule["type"]`` or else its default's; ``None`` ("not set") is
    allowed when the default is None or ``rule["optional"]`` is true. A list option (or one of no known type) is left to the
    generator's own ``check_settings``.

    Args:
        name: the option's name (for the message).
        value: the given value.
        rule: its declaration: ``type``, ``optional``, ``min``, ``min_exclusive``, ``max``,
            ``choices``.
        default: its default (from the generator's signature).
    """
    kind = rule.get("type", type(default) if default is not None else None)
    if kind not in (bool, int, float, str) or (value is None and (default is None or
                                                                 rule.get("optional"))):
        return
    check_value(name, value, kind(), rule)


def check_value(name: str, value: Any, default: Any, meta: Mapping[str, Any]) -> None:
    """Check a value of the type of ``default`` against ``meta`` (range, choices); ConfigError."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(name, f"expected a whole number, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        elif not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value!r}")
        if ("min" in meta and value < meta["min"]) or \
           ("min_exclusive" in meta and value <= meta["min_exclusive"]) or \
           ("max" in meta and value > meta["max"]):
            raise ConfigError(name, f"{value!r} is out of range; allowed: {range_text(meta)}")
    elif isinstance(default, tuple):
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(name, f"expected a list of non-empty strings, got {value!r:.80}")
        for v in value:
            check_text(name, v)
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a mapping, got {value!r:.80}")
    elif default is None:  # an optional path or name
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(name, f"expected a file path, got {value!r}")
    elif not isinstance(value, str):
        raise ConfigError(name, f"expected text, got {value!r:.80}")
    else:
        check_text(name, value)
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(meta['choices'])}")


def check_multiple(width: int, height: int, multiple: int, maker: str) -> None:
    """Refuse a size whose sides are not multiples of ``multiple``, naming the nearest allowed.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        multiple: what every side must be a multiple of.
        maker: who makes the sizes, for the message (``generator 'vae' with this model``).
    """
    if width % multiple or height % multiple:
        near = [max(multiple, round(side / multiple) * multiple) for side in (width, height)]
        raise ConfigError("size", f"{width}x{height}: {maker} makes sizes that are multiples "
                          f"of {multiple}; nearest allowed: {near[0]}x{near[1]}")
