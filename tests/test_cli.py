"""The CLI: generate, --from, models, exit codes (BAD_INPUTS rows 1-11, 13-15 at the CLI layer)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.outputs import read_config

runner = CliRunner()


def gen(clip_dir, *args):
    # the defaults come first: a later flag wins, so a test's own --size overrides them
    return runner.invoke(app, ["generate", "--clip", str(clip_dir), "--cutn", "2", "--size", "32",
                               "--steps", "2", "-q", *args])


def test_generate_writes_png_with_settings_and_from_repeats_it(tiny_clip_dir, tmp_path):
    r = gen(tiny_clip_dir, "a red circle:2 | blur:-1", "--steps", "3", "--seed", "5",
            "--out", str(tmp_path / "a.png"))
    assert r.exit_code == 0, r.output
    cfg = read_config(tmp_path / "a.png")
    assert (cfg.prompt, cfg.steps, cfg.seed, cfg.width, cfg.cutn) == \
        ("a red circle:2 | blur:-1", 3, 5, 32, 2)
    r2 = runner.invoke(app, ["generate", "--from", str(tmp_path / "a.png"), "--out",
                             str(tmp_path / "b.png"), "-q"])
    assert r2.exit_code == 0, r2.output
    assert read_config(tmp_path / "b.png") == cfg
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    r3 = runner.invoke(app, ["generate", "--from", str(tmp_path / "a.png"), "--steps", "1",
                             "--out", str(tmp_path / "c.png"), "-q"])
    assert r3.exit_code == 0 and read_config(tmp_path / "c.png").steps == 1


def test_random_seed_is_reported_and_saved(tiny_clip_dir, tmp_path):
    r = gen(tiny_clip_dir, "x", "--steps", "1", "--seed", "-1", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    seed = int(r.stderr.split("seed: ")[1].split()[0])
    (png,) = tmp_path.glob("*.png")
    assert read_config(png).seed == seed and png.name.endswith(f"-s{seed}.png")


@pytest.mark.parametrize("args, field", [
    (["", "--steps", "1"], "prompt is empty"),
    (["x", "--steps", "-1"], "steps"),
    (["x", "--lr", "nan"], "lr"),
    (["x", "--lr", "0"], "lr"),
    (["x", "--seed", str(2**64)], "seed"),
    (["x", "--size", "0"], "width"),
    (["x", "--size", "1x100000"], "out of range"),
    (["x", "--size", "abc"], "size"),
    (["x", "--generator", "nope"], "generator"),
    (["x", "--generator-options", "{bad"], "generator_options"),
    (["x", "--init-image", "/no/such.png"], "cannot read image"),
    (["a\x00b"], "NUL"),
])
def test_bad_input_exits_2_before_work(tiny_clip_dir, tmp_path, args, field):
    r = gen(tiny_clip_dir, *args, "--out", str(tmp_path))
    assert r.exit_code == 2, r.output
    assert field in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_model_lists_available(tmp_path):
    r = runner.invoke(app, ["generate", "x", "--clip", "ViT-Nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "shapes" in r.stderr and "ViT-B-32" in r.stderr


def test_cuda_requested_without_gpu(tiny_clip_dir, tmp_path):  # row 11
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = gen(tiny_clip_dir, "x", "--device", "cuda", "--out", str(tmp_path))
    assert r.exit_code == 2 and "CUDA is not available" in r.stderr
    r = runner.invoke(app, ["generate", "x", "--clip", str(tiny_clip_dir), "--cutn", "2",
                            "--size", "32", "--steps", "1", "--out", str(tmp_path)])  # not -q
    assert r.exit_code == 0 and "running on the CPU" in r.stderr


def test_divergence_exits_1_without_saving(tiny_clip_dir, tmp_path):  # row 7
    r = gen(tiny_clip_dir, "x", "--lr", "1e6", "--steps", "12", "--out", str(tmp_path))
    assert r.exit_code == 1 and "diverged at step 1" in r.stderr
    assert not list(tmp_path.iterdir())


def test_disk_full_exits_1(tiny_clip_dir, tmp_path, monkeypatch):  # row 13
    import errno

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    r = gen(tiny_clip_dir, "x", "--steps", "1", "--out", str(tmp_path))
    assert r.exit_code == 1 and "No space" in r.stderr
    assert not list(tmp_path.iterdir())


def test_prompt_cannot_escape_the_output_folder(tiny_clip_dir, tmp_path):  # row 14
    out = tmp_path / "out"
    r = gen(tiny_clip_dir, "../../x", "--steps", "1", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert [p.name for p in out.iterdir()] == ["x-s0.png"]


def test_progress_gif(tiny_clip_dir, tmp_path):
    r = gen(tiny_clip_dir, "x", "--steps", "4", "--save-every", "2", "--out",
            str(tmp_path / "x.png"))
    assert r.exit_code == 0 and (tmp_path / "x.gif").is_file()


def test_models_lists_generators_and_clip():
    r = runner.invoke(app, ["models", "--json"])
    data = json.loads(r.stdout)
    names = {g["name"] for g in data["generators"]}
    assert {"pixel", "fourier"} <= names
    assert "ViT-B-32:laion2b_s34b_b79k" in data["clip"]["open_clip"]
    assert {b["name"] for b in data["clip"]["bundled"]} == {"shapes", "shapes-judge"}
    kinds = {m["name"]: m["kind"] for m in data["generator_models"]}
    assert kinds == {"shapes-ddpm": "diffusion", "shapes-vae": "autoencoder",
                     "shapes-vq": "autoencoder"}
    text = runner.invoke(app, ["models"]).stdout
    assert "decay" in text and "min_size" in text
    assert "shapes-vae" in text and "shapes-ddpm" in text


def test_sigterm_exits_130_and_leaves_no_file(tiny_clip_dir, tmp_path):  # row 15
    exe = Path(sys.executable).with_name("clipforge")
    proc = subprocess.Popen([str(exe), "generate", "x", "--clip", str(tiny_clip_dir), "--size",
                             "32", "--cutn", "2", "--steps", "100000", "--out", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    line = ""
    while "seed:" not in line and time.time() < deadline:
        line = proc.stderr.readline()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and not list(tmp_path.glob("*.png"))
