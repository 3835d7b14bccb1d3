"""The layout holds: layers import only downward, no import cycles, small files that say what
they hold, Typer only in the CLI (docs/architecture.md draws the layers this test checks).

Imports are read from the source with ``ast``, at every depth (a lazy import inside a function
counts as much as one at the top), plus every string that names a clipforge module (the
registry's ``"module:Class"`` targets, anything handed to ``importlib``): dynamic imports are
imports too. The package ``__init__`` is left out: its names resolve lazily and it imports
nothing when loaded.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "clipforge"

# Lowest first. A module may import its own layer (without cycles) and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "fields", "protocols", "pretrained", "offline", "pngtext"),  # ground: no torch
    ("config", "images", "weights"),
    ("outputs", "checkpoint", "targets", "frames"),
    ("guidance", "generators", "registry", "loop", "precision"),        # the engine's parts
    ("runner", "training", "evaluate", "memory"),                       # a run; CLIPs we train
    ("batch", "ui"),                                                    # front ends' libraries
    ("cli", "__main__"),                                                # the command line
]
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The clipforge module a dotted name refers to (the longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str) -> set[str]:
    """Every clipforge module that ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # imports by name: the registry's "module:Class" targets, importlib's "module"
            m = re.fullmatch(r"(clipforge(?:\.\w+)+)(?::\w+)?", node.value)
            names = [m.group(1)] if m else []
        for name in names:
            target = _resolve(name) if name.startswith("clipforge") else None
            if target and target not in (module, "clipforge"):
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES if m != "clipforge"}


def layer_of(module: str) -> int:
    head = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it")


def test_every_module_has_a_layer():
    for m in GRAPH:
        layer_of(m)


def test_nothing_imports_upward():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:  # depth-first; a grey node met again closes a cycle
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_typer_and_rich_only_in_the_cli():
    pattern = re.compile(r"^\s*(?:import|from)\s+(typer|rich)\b", re.M)
    outside = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
               if "cli" not in p.relative_to(PKG).parts and pattern.search(p.read_text())]
    assert not outside, outside
    # the grep and the import graph agree: no module outside the CLI reaches it
    assert not [m for m, t in GRAPH.items() if layer_of(m) < layer_of("clipforge.cli")
                and any(x.startswith("clipforge.cli") for x in t)]


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_files_are_small_and_say_what_they_hold(module):
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"{path.name}: {len(text.splitlines())} lines"
    if text.strip():
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc.split()) >= 5, f"{path}: no docstring saying what it holds"


def test_light_modules_import_no_heavy_library():
    code = ("import sys, clipforge.config, clipforge.errors, clipforge.pretrained, "
            "clipforge.protocols, clipforge.registry; "
            "print(sorted({'torch', 'gradio', 'open_clip', 'diffusers', 'ray', 'typer'} "
            "& set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
