"""Command-line flags derived from RunConfig's fields, and flags turned back into settings.

Every RunConfig field but ``prompt`` (a positional argument) and ``width``/``height``
(``--size N`` or ``WxH``) is a flag with the field's help text, so a default exists once.
Every flag defaults to None, meaning "not given": :func:`flag_settings` keeps only the given
ones, through :func:`clipforge.config.merge`, so they layer over a PNG's settings, a checkpoint's
or a ``--config`` file the same way everywhere.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping, Optional

import typer

from clipforge.config import field_defaults, field_help, merge

_NOT_FLAGS = ("prompt", "width", "height")
FLAG_NAMES = tuple(n for n in field_defaults() if n not in _NOT_FLAGS) + ("size",)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option(name: str, annotation: Any, default: Any, *decls: str, **kw: Any) -> inspect.Parameter:
    """A keyword-only command parameter that typer reads as ``--flag``.

    Args:
        name: the Python name.
        annotation: its type.
        default: its default value.
        decls: the flag names (default ``--name-with-dashes``).
        kw: typer.Option's other arguments (``help``, ``min``, ...).
    """
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *(decls or (_flag(name),)), **kw))


def argument(name: str, annotation: Any, default: Any, **kw: Any) -> inspect.Parameter:
    """A positional command parameter (typer.Argument).

    Args:
        name: the Python name.
        annotation: its type.
        default: its default (``...``: required).
        kw: typer.Argument's other arguments (``help``, ``metavar``, ...).
    """
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=annotation, default=typer.Argument(default, **kw))


def config_parameters() -> list[inspect.Parameter]:
    """One typer option per RunConfig field (``--size`` stands for width and height)."""
    helps, params = field_help(), []
    for name, default in field_defaults().items():
        if name in _NOT_FLAGS:
            continue
        decls = (_flag(name),)
        if isinstance(default, bool):
            ann, decls = Optional[bool], (f"{_flag(name)}/--no-{name.replace('_', '-')}",)
        elif isinstance(default, (int, float)):
            ann = Optional[type(default)]
        elif isinstance(default, tuple):
            ann = Optional[list[str]]
            decls = (_flag(name.rstrip("s")) if name == "image_prompts" else _flag(name),)
        else:
            ann = Optional[str]
        shown = json.dumps(default) if isinstance(default, (dict, tuple)) else default
        params.append(option(name, ann, None, *decls, show_default=False,
                             help=f"{helps[name]} (default: {shown})"))
    params.append(option("size", Optional[str], None, show_default=False,
                         help="N (square) or WxH (default: 256)"))
    return params


def flag_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The RunConfig flags that were given, as checked partial settings.

    Args:
        values: a command's keyword arguments (other names are ignored; None = not given).

    Raises:
        ConfigError: a flag's value is bad, naming the field.
    """
    return merge({name: values.get(name) for name in FLAG_NAMES})


def command(body: Callable[..., None], params: list[inspect.Parameter],
            doc: str) -> Callable[..., None]:
    """A function typer reads as a command with ``params``, calling ``body(**kwargs)``.

    Args:
        body: the command's implementation.
        params: its parameters (see :func:`option`, :func:`argument`, :func:`config_parameters`).
        doc: its help text.
    """
    def cmd(**kwargs: Any) -> None:
        body(**kwargs)

    cmd.__signature__ = inspect.Signature(params)
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    cmd.__doc__ = doc
    return cmd


__all__ = ["FLAG_NAMES", "option", "argument", "config_parameters", "flag_settings", "command"]
