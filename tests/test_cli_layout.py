"""The layers hold: the CLI is the top floor, the batch library stands without it.

Typer is imported only under ``clipforge/cli/``; nothing below the CLI imports it, statically
or by name (importlib); the import graph of the whole package, with those by-name imports,
has no cycle; ``import clipforge.batch`` loads no typer, rich, torch or CLI module; and
``python -m clipforge`` is the same command line as the console script.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipforge"
# a module named in a string: importlib targets and the registry's "module:Class" specs
NAMED = re.compile(r"^(clipforge(?:\.\w+)+)(?::\w+)?$")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The clipforge modules ``path`` imports anywhere (function bodies too, and by name)."""
    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text(encoding="utf-8"))
    by_name = "importlib" in path.read_text(encoding="utf-8")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.startswith("clipforge")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and \
                (node.module or "").startswith("clipforge"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in mods else known(node.module))
        elif by_name and isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = NAMED.match(node.value)
            if m:
                found.add(known(m.group(1)))
    found.discard(None)
    return found


def test_typer_is_imported_only_by_the_cli():
    pattern = re.compile(r"^\s*(import typer|from typer\b)", re.M)
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if pattern.search(p.read_text(encoding="utf-8")))
    assert users and all(u.startswith("cli/") for u in users), users


def test_nothing_below_the_cli_imports_it():
    mods = _modules()
    below = {m: p for m, p in mods.items()
             if not m.startswith("clipforge.cli") and m != "clipforge.__main__"}
    offenders = {m: sorted(d for d in _imports(p, mods) if d.startswith("clipforge.cli"))
                 for m, p in below.items()}
    assert not {m: d for m, d in offenders.items() if d}
    batch = [p for m, p in mods.items() if m.startswith("clipforge.batch")]
    assert len(batch) >= 6
    for path in batch:
        assert not re.search(r"^\s*(import|from) (typer|rich|click)\b", path.read_text(),
                             re.M), path


def test_the_import_graph_has_no_cycle():
    mods = _modules()
    graph = {m: _imports(p, mods) - {m} for m, p in mods.items()}
    assert "clipforge.batch.runner" in graph["clipforge.batch.ray_backend"]  # the scan works
    assert "clipforge.runner" in graph["clipforge"]  # names in strings count
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            assert state.get(d) != 1, " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_importing_the_batch_library_loads_no_cli_or_heavy_module():
    code = ("import sys, clipforge.batch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'rich', 'click', 'torch') or m.startswith('clipforge.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_clipforge_is_the_command_line():
    out = subprocess.run([sys.executable, "-m", "clipforge", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for command in ("generate", "batch", "models", "ui", "train-clip", "classify", "score",
                    "convert-vqgan"):
        assert command in out.stdout, command
    bad = subprocess.run([sys.executable, "-m", "clipforge", "generate", "x", "--steps", "-1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "steps" in bad.stderr


def test_one_error_mapper_decides_every_exit_code(capsys):
    import pytest
    import typer

    from clipforge.cli.common import exits
    from clipforge.errors import ConfigError, DataError, DiskError, NonFiniteLossError

    cases = [(ConfigError("steps", "bad"), 2, "error: steps: bad"),
             (DataError("no such file", "x.csv"), 2, "error: x.csv: no such file"),
             (NonFiniteLossError(3, "diverged at step 3"), 1, "error: diverged at step 3"),
             (DiskError("disk full"), 1, "error: disk full; the batch stopped"),
             (OSError(28, "No space left on device"), 1, "No space left on device"),
             (KeyError("x"), 1, "error: KeyError: 'x'"),
             (KeyboardInterrupt(), 130, "interrupted")]
    for exc, code, message in cases:
        with pytest.raises(typer.Exit) as info:
            with exits("the batch stopped" if isinstance(exc, DiskError) else ""):
                raise exc
        assert info.value.exit_code == code, exc
        assert message in capsys.readouterr().err, exc
    with pytest.raises(typer.Exit) as info:
        with exits():
            raise typer.Exit(0)  # a deliberate exit passes through untouched
    assert info.value.exit_code == 0 and not capsys.readouterr().err
