"""Package hygiene: light import, lazy public API, no top-level name clashes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_loads_no_model_or_ui_library():
    code = ("import sys, clipforge; heavy = {'torch', 'gradio', 'open_clip', 'diffusers', 'ray'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve():
    import clipforge

    for name in clipforge.__all__:
        assert getattr(clipforge, name) is not None, name


def test_subpackages_live_inside_clipforge():
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top == {"clipforge"}
    for sub in ("guidance", "generators", "ui", "training"):
        assert (ROOT / "clipforge" / sub / "__init__.py").exists()


def test_console_script_help():
    exe = Path(sys.executable).with_name("clipforge")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "generate" in out.stdout and "models" in out.stdout
