"""open_clip's table of pretrained ``(architecture, tag)`` pairs, read without importing open_clip.

``open_clip.list_pretrained()`` is the source, but importing open_clip imports torch (about
10 s on a busy machine) and ``clipforge models`` only lists names. So :func:`pretrained_tags`
reads the same table from open_clip's installed ``pretrained.py`` with :mod:`ast` (the
``_PRETRAINED`` dict of tag tables, plus the ``-quickgelu`` variants open_clip derives from the
tags marked ``quick_gelu=True``), and falls back to importing open_clip when the file's shape
is not what it expects. ``tests/test_cli_conventions.py`` checks it against open_clip's own call.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def _tags(node: ast.AST, tables: dict[str, ast.AST]) -> dict[str, bool] | None:
    """tag -> quick_gelu of one architecture's table (a ``dict(...)`` call, ``{...}`` or a name)."""
    if isinstance(node, ast.Name):
        node = tables.get(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        items = [(kw.arg, kw.value) for kw in node.keywords]
    elif isinstance(node, ast.Dict):
        items = [(k.value if isinstance(k, ast.Constant) else None, v)
                 for k, v in zip(node.keys, node.values)]
    else:
        return None
    out = {}
    for tag, cfg in items:
        if not isinstance(tag, str):
            return None
        quick = isinstance(cfg, ast.Call) and any(
            kw.arg == "quick_gelu" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in cfg.keywords)
        out[tag] = quick
    return out


def _from_source(path: Path) -> list[tuple[str, str]] | None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tables: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            tables[node.targets[0].id] = node.value
    top = tables.get("_PRETRAINED")
    if not isinstance(top, ast.Dict):
        return None
    arches: dict[str, dict[str, bool]] = {}
    for key, value in zip(top.keys, top.values):
        tags = _tags(value, tables)
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str) or tags is None:
            return None
        arches[key.value] = tags
    quick = {f"{a}-quickgelu": {t: True for t, q in tags.items() if q}
             for a, tags in arches.items() if any(tags.values())}
    arches.update(quick)
    return [(a, t) for a, tags in arches.items() for t in tags] or None


def pretrained_tags() -> list[tuple[str, str]]:
    """open_clip's ``list_pretrained()``: ``(architecture, tag)`` pairs; [] without open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    source = Path(list(spec.submodule_search_locations)[0]) / "pretrained.py"
    try:
        found = _from_source(source)
    except (OSError, SyntaxError, ValueError):
        found = None
    if found is not None:
        return found
    import open_clip  # an unexpected layout: ask open_clip itself (slow, but right)

    return list(open_clip.list_pretrained())


__all__ = ["pretrained_tags"]
