"""Every numbered example runs offline on the bundled model (with few steps)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


def test_there_are_at_least_three_api_examples():
    assert len([p for p in EXAMPLES if not p.name.startswith("00_")]) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    args = ["--steps", "3"] + (["--out", str(tmp_path / "demo"), "--size", "48"]
                               if script.name.startswith("00_") else [])
    r = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote" in r.stdout or ".png" in r.stdout
    assert list(tmp_path.rglob("*.png"))
