"""The CLI is the top floor: the batch library stands without it, ``python -m clipforge`` is
the console script, and one error mapper decides every exit code.

The layering of the whole package (Typer only in the CLI, no cycles, nothing importing
upward) is checked by tests/test_architecture.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
