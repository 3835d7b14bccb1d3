"""CLI conventions (issue 16 point 3): --version, -h and -q on every command, shell completion,
``python -m clipforge``, --json result lines on generate and batch, ``clipforge models`` with no
torch, and a loading notice before the first step."""

import json
import os
import resource
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app

runner = CliRunner()
COMMANDS = sorted(c.name for c in app.registered_commands)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "clipforge", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def test_version_with_python_dash_m():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"clipforge {clipforge.__version__}"
    assert runner.invoke(app, ["-V"]).stdout.strip() == f"clipforge {clipforge.__version__}"


def test_every_command_has_short_help_and_quiet():
    assert set(COMMANDS) >= {"generate", "batch", "models", "train-clip", "classify", "score",
                             "convert-vqgan", "ui"}
    for name in [None, *COMMANDS]:
        r = runner.invoke(app, ([name] if name else []) + ["-h"])
        assert r.exit_code == 0 and "Usage:" in r.stdout, (name, r.output)
        if name:
            assert "--quiet" in r.stdout and "-q" in r.stdout, name


def test_shell_completion_is_offered_and_completes_commands():
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
    env = {**ENV, "_CLIPFORGE_COMPLETE": "complete_bash", "COMP_WORDS": "clipforge gen",
           "COMP_CWORD": "1"}
    r = subprocess.run([sys.executable, "-c", "from clipforge.cli import app; "
                        "app(prog_name='clipforge')"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert "generate" in r.stdout.split(), (r.stdout, r.stderr)


def test_models_imports_no_torch_and_takes_well_under_a_second():
    code = ("import sys; from clipforge.cli import app\n"
            "try:\n    app(['models', '--json'], prog_name='clipforge')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({'torch', 'open_clip', 'diffusers'} & set(sys.modules)), "
            "file=sys.stderr)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "[]", r.stderr
    print(f"clipforge models: {cpu:.2f} s of CPU")
    assert cpu < 1.0  # was 10-14 s of wall time when it imported open_clip (and torch)
    listed = json.loads(r.stdout)
    import open_clip

    from clipforge import registry

    assert listed["clip"]["open_clip"] == [f"{a}:{t}" for a, t in open_clip.list_pretrained()]
    assert {g["name"]: g["options"] for g in listed["generators"]} == json.loads(json.dumps(
        {n: registry.generator_options(n) for n in registry.GENERATORS}))


@pytest.fixture
def gen_args(tiny_clip_dir):
    return ["--clip", str(tiny_clip_dir), "--size", "32", "--steps", "3", "--cutn", "2",
            "--seed", "4"]


def test_generate_json_line_and_loading_notice(gen_args, tmp_path):
    r = runner.invoke(app, ["generate", "a red circle", *gen_args, "--json",
                            "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.strip().splitlines()
    row = json.loads(line)
    assert set(row) == {"path", "seed", "seconds", "loss"}
    assert row["path"] == str(tmp_path / "a.png") and row["seed"] == 4
    assert row["seconds"] > 0 and isinstance(row["loss"], float)
    err = r.stderr
    assert err.index("loading CLIP") < err.index("loaded in") < err.index("seed: 4")


def test_generate_quiet_prints_only_the_result(gen_args, tmp_path):
    r = runner.invoke(app, ["generate", "a red circle", *gen_args, "-q",
                            "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == f"{tmp_path / 'a.png'}\n"


def test_batch_json_one_line_per_image_written(tiny_clip_dir, tmp_path):
    (tmp_path / "list.txt").write_text("a red circle\na blue square\n")
    args = ["batch", str(tmp_path / "list.txt"), "--out", str(tmp_path / "o"), "--clip",
            str(tiny_clip_dir), "--size", "16", "--steps", "2", "--cutn", "2", "--seeds", "0-1",
            "--json", "-q"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert len(rows) == 4 and sorted(x["seed"] for x in rows) == [0, 0, 1, 1]
    for x in rows:
        assert os.path.isfile(x["path"]) and x["seconds"] > 0 and isinstance(x["loss"], float)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.stdout == ""  # nothing written, nothing printed


def test_train_clip_takes_quiet(tmp_path):
    r = runner.invoke(app, ["train-clip", "shapes", "--config", "tiny", "--steps", "2",
                            "--batch-size", "4", "--out", str(tmp_path / "m"), "-q"])
    assert r.exit_code == 0, r.output
    assert "--no-progress" not in runner.invoke(app, ["train-clip", "-h"]).stdout
