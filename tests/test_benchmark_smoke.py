"""The step-speed benchmark runs end to end on a tiny model, and its reference loop and the
speed paths it measures compute what they claim to; the steering benchmark runs end to end."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "step_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("step_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_benchmark_smoke_prints_medians_and_ratio_last(tiny_clip_dir):
    r = _run("--clip", str(tiny_clip_dir), "--size", "32", "--cutn", "4", "--steps", "2",
             "--repeats", "1", "--threads", "1", "--precision", "fp32,bf16")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    tail = r" s/step .*n=2\); CPU \d+\.\d+ s/step"
    ref = re.search(r"^reference median (\d+\.\d+)" + tail, r.stdout, re.M)
    fp32 = re.search(r"^ours\[fp32\] median (\d+\.\d+)" + tail, r.stdout, re.M)
    bf16 = re.search(r"^ours\[bf16\] median (\d+\.\d+)" + tail, r.stdout, re.M)
    assert ref and fp32 and bf16, r.stdout
    assert re.search(r"^CPU-time ratio reference/ours\[bf16\]: \d+\.\d\dx$", r.stdout, re.M)
    cos = re.search(r"^ours\[bf16\] image gradient vs fp32: cosine (-?\d\.\d+)$", r.stdout, re.M)
    assert cos and 0.9 < float(cos.group(1)) <= 1.0 + 1e-6, r.stdout
    assert "load average" in r.stdout
    # the ratios come last, the last one for the last variant asked for
    assert re.fullmatch(r"ratio reference/ours\[fp32\]: \d+\.\d\dx", lines[-2]), lines[-2]
    last = re.fullmatch(r"ratio reference/ours\[bf16\]: (\d+\.\d\d)x", lines[-1])
    assert last, lines[-1]
    # the ratio is the quotient of the two printed medians (to their printed precision)
    expected = float(ref.group(1)) / float(bf16.group(1))
    assert float(last.group(1)) == pytest.approx(expected, rel=0.2, abs=0.02)


def test_benchmark_json_has_every_loop(tiny_clip_dir):
    r = _run("--clip", str(tiny_clip_dir), "--size", "32", "--cutn", "4", "--steps", "1",
             "--repeats", "2", "--threads", "1", "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)                       # stdout is the JSON alone
    names = [x["name"] for x in data["loops"]]
    assert names == ["reference", "ours[fp32]"]
    ours = data["loops"][1]
    assert ours["n"] == 2 and ours["precision"] == "fp32" and ours["compile"] is False
    assert ours["ratio"] == pytest.approx(data["loops"][0]["median_s"] / ours["median_s"])
    assert "ratio reference/ours[fp32]" in r.stderr  # the report still goes to stderr


@pytest.mark.parametrize("args, field, allowed", [
    (["--cutn", "0"], "cutn", "1 to 256"),
    (["--size", "5"], "size", "8 to 4096"),
    (["--steps", "two"], "steps", "whole number"),
])
def test_benchmark_rejects_bad_options_before_work(args, field, allowed):
    r = _run(*args)
    assert r.returncode == 2
    assert field in r.stderr and allowed in r.stderr
    assert "step speed" not in r.stdout            # refused before any model was built


def test_benchmark_unknown_clip_is_a_clear_error():
    r = _run("--clip", "no-such-model:random", "--steps", "1", "--repeats", "1")
    assert r.returncode != 0
    assert "--clip" in r.stderr and "unknown model" in r.stderr


def test_reference_cutouts_shape_and_gradient(bench):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 48, 40, requires_grad=True)
    cuts = bench.MakeCutouts(16, 6)(image)
    assert cuts.shape == (6, 3, 16, 16)
    cuts.square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_reference_augments_are_kornias_own(bench):
    import kornia.augmentation as K

    kinds = [type(m) for m in bench.MakeCutouts(16, 6).augs]
    assert kinds == [K.RandomAffine, K.RandomPerspective, K.ColorJitter, K.RandomErasing]


def test_lean_vit_forward_matches_open_clip(tiny_embedder):
    from clipforge.guidance.lean_vit import is_plain_vit as _is_plain_vit
    from clipforge.guidance.lean_vit import vit_features as _vit_features

    assert tiny_embedder._lean_vit and _is_plain_vit(tiny_embedder.model)
    size = tiny_embedder.image_size
    x = torch.rand(3, 3, size, size)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fa = _vit_features(tiny_embedder.model.visual, xa)
    fb = tiny_embedder.model.encode_image(xb)
    assert torch.allclose(fa, fb, atol=1e-5, rtol=1e-4)
    ga, = torch.autograd.grad(fa.square().sum(), xa)
    gb, = torch.autograd.grad(fb.square().sum(), xb)
    assert torch.allclose(ga, gb, atol=1e-6, rtol=1e-4)
    # a size the patch does not divide: the patch convolution floors, and so does the fast path
    y = torch.rand(1, 3, size + 5, size + 3)
    with torch.no_grad():
        assert torch.allclose(_vit_features(tiny_embedder.model.visual, y),
                              tiny_embedder.model.encode_image(y), atol=1e-5, rtol=1e-4)


def test_lean_vit_is_not_used_for_other_models():
    from clipforge.guidance.lean_vit import is_plain_vit as _is_plain_vit

    class NotOpenClip(torch.nn.Module):
        def encode_image(self, x):
            return x.flatten(1)

    assert not _is_plain_vit(NotOpenClip())


@pytest.mark.parametrize("b", [1, 2])   # one image: one sample per crop; more: one grid each
def test_cutouts_one_grid_equals_per_crop_sampling(b):
    from clipforge.guidance.augment import Cutouts

    cut = Cutouts(16, 5, noise=0.0)           # flips, rotation, perspective on; no pixel noise
    image = torch.rand(b, 3, 40, 36)
    params = cut.sample(40, 36, torch.Generator().manual_seed(3))
    out = cut.apply(image, params)
    s = params.size * params.supersample
    lin = (torch.arange(s, dtype=torch.float32) * 2 + 1) / s - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    base = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(-1, 3)
    expected = []
    for i in range(b):                        # image-major, one crop at a time
        for m in params.matrices:
            pts = base @ m.T
            grid = (pts[:, :2] / pts[:, 2:].clamp(min=1e-3)).reshape(1, s, s, 2)
            crop = F.grid_sample(image[i:i + 1], grid, mode="bilinear",
                                 padding_mode="reflection", align_corners=False)
            expected.append(F.avg_pool2d(crop, params.supersample)
                            if params.supersample > 1 else crop)
    assert out.shape == (5 * b, 3, 16, 16)
    assert torch.allclose(out, torch.cat(expected), atol=1e-6)


GPU_SCRIPT = ROOT / "benchmarks" / "gpu_step.py"


def _gpu_step(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(GPU_SCRIPT), "--device", "cpu", "--quick",
                        "--json", str(out), *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads(out.read_text())


def test_gpu_check_script_runs_on_cpu(tmp_path):
    r, data = _gpu_step(tmp_path, "--generators", "pixel", "--no-pytest")
    assert data["device"] == "CPU" and set(data["matmul_flops"]) == {"fp32", "bf16"}
    (res,) = [x for x in data["results"] if x["precision"] == "fp32"]
    assert res["generator"] == "pixel" and res["size"] == 64 and res["ms"] > 0
    assert res["flops"] > 0 and res["floor_ms"] > 0 and res["peak_bytes"] > 0
    assert re.search(r"^pixel +64 px fp32: \d+\.\d ms/step .*x the floor; peak memory",
                     r.stdout, re.M), r.stdout


@pytest.mark.slow
def test_gpu_check_script_runs_every_generator_and_the_gpu_tests_on_cpu(tmp_path):
    r, data = _gpu_step(tmp_path, "--compile")
    done = {(x["generator"], x["precision"]) for x in data["results"] if "error" not in x}
    assert {g for g, _ in done} == {"pixel", "fourier", "vae", "diffusion"}
    assert data["pytest_gpu"] and "skipped" in data["pytest_gpu"]   # no CUDA here


def _steering_benchmark(tmp_path, *args):
    """Run benchmarks/steering.py on pixel at 32 px with 2 cutouts, keeping its JSON and PNGs;
    returns (the finished process, the PNG folder, the JSON path)."""
    out, dump = tmp_path / "grid", tmp_path / "grid.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "steering.py"), "--generators",
                        "pixel", *args, "--set", "size=\"32\"", "--set", "cutn=2", "--json",
                        str(dump), "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r, out, dump


def test_steering_benchmark_reads_each_case_with_the_judge_given(tmp_path, tiny_clip_dir):
    from clipforge.config import RunConfig
    from clipforge.evaluate.steering import vocabulary
    from clipforge.outputs import read_config, slugify

    r, out, dump = _steering_benchmark(tmp_path, "--cases", "2", "--judge", str(tiny_clip_dir),
                                       "--set", "steps=2")
    row = re.search(r"^pixel\s+2\s+\d+%\s+\d+%\s+\d+%\s+\d+%", r.stdout, re.M)
    assert row, r.stdout
    data = json.loads(dump.read_text())
    assert data["judge"] == str(tiny_clip_dir) and data["settings"]["steps"] == 2
    for case, o in zip(vocabulary(0)[:2], data["outcomes"]["pixel"]):
        assert (o["prompt"], o["seed"]) == (case.prompt, case.seed)
        cfg = read_config(out / "pixel" / f"{slugify(case.prompt)}-s{case.seed}.png")
        # the saved image is the run of the case with the guide's recommendation under --set
        assert cfg == RunConfig.from_settings(
            {"steps": 2, "width": 32, "height": 32, "cutn": 2},
            {"prompt": case.prompt, "generator": "pixel", "clip": ["shapes"], "seed": case.seed})


def test_steering_benchmark_guides_with_the_clip_given(tmp_path, tiny_clip_dir):
    from clipforge.outputs import read_config

    _, out, dump = _steering_benchmark(tmp_path, "--cases", "1", "--clip", str(tiny_clip_dir),
                                       "--set", "steps=1")
    assert json.loads(dump.read_text())["clip"] == str(tiny_clip_dir)
    (png,) = (out / "pixel").glob("*.png")
    assert read_config(png).clip == (str(tiny_clip_dir),)


def test_steer_refuses_a_guide_named_in_the_settings():
    """It used to replace it silently with ``clip`` (so a --set clip=... grid ran the bundled
    guide and read it as the other one)."""
    from clipforge.errors import UsageError
    from clipforge.evaluate.steering import steer, vocabulary

    with pytest.raises(UsageError, match="clip="):
        steer("pixel", vocabulary(0)[:1], settings={"clip": ["elsewhere"]})
