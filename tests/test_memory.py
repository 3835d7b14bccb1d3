"""Host memory (issue 15 item 1; BAD_INPUTS row 23): a size that cannot fit is refused before
work naming the largest that fits; a CPU allocation failure is the same out-of-memory error as
CUDA's (exit 1), and in a batch only that item fails."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clipforge import memory
from clipforge.cli import app
from clipforge.config import RunConfig
from clipforge.errors import ConfigError, RunOutOfMemoryError
from clipforge.runner import Run

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def test_refusal_names_the_largest_size_that_fits():
    per_pixel = 375  # the pixel generator's declaration
    free = memory.RUN_BASE_BYTES + per_pixel * 512 * 256
    with pytest.raises(ConfigError, match=r"size: 2048x1024 .* needs about .* the largest size "
                                          r"that fits is about 512x256"):
        memory.check_memory("pixel", 2048, 1024, {}, CPU, available=free)
    memory.check_memory("pixel", 512, 256, {}, CPU, available=free)  # it fits exactly
    with pytest.raises(ConfigError, match="no size fits"):
        memory.check_memory("pixel", 512, 256, {}, CPU, available=memory.RUN_BASE_BYTES)


def test_generators_without_a_declaration_are_not_refused():
    assert memory.needed_bytes("vae", 4096, 4096, {}) is None
    assert memory.needed_bytes("diffusion", 64, 64, {"model": "/my/own/pipeline"}) is None
    assert memory.needed_bytes("diffusion", 64, 64, {"model": "shapes-ddpm"}) == 5000 * 64 * 64


def test_diffusion_at_4096_is_refused_before_any_model_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * 2**30)
    r = CliRunner().invoke(app, ["generate", "a red circle", "--generator", "diffusion",
                                 "--size", "4096", "--steps", "3", "--cutn", "4", "--clip",
                                 str(tmp_path / "no-clip"), "--device", "cpu", "--out",
                                 str(tmp_path / "a.png")])
    assert r.exit_code == 2, r.output
    assert "needs about 78.6 GB of host memory" in r.stderr and "largest size" in r.stderr


@pytest.mark.parametrize("size", ["2048", "720"])
def test_under_an_address_space_limit_never_a_traceback(size, tmp_path):
    """The issue's reproducer (`ulimit -v 4000000`, pixel): refused up front (exit 2) or the
    out-of-memory error (exit 1), never the allocator's traceback."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4_000_000 * 1024, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "clipforge", "generate", "a red circle", "--size",
                        size, "--steps", "3", "--cutn", "4", "-q", "--device", "cpu", "--out",
                        str(tmp_path / "a.png")], env=env, preexec_fn=limit,
                       capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr and "DefaultCPUAllocator" not in r.stderr, r.stderr
    if r.returncode == 2:
        assert "of host memory" in r.stderr and "largest size that fits" in r.stderr
    else:
        assert r.returncode in (0, 1), r.stderr
        assert r.returncode == 0 or "out of memory" in r.stderr
    if size == "2048":
        assert r.returncode == 2  # 2048 px cannot fit in 4 GB of address space


def _allocator_failure_at(monkeypatch, k: int):
    from clipforge.guidance.guide import Guide

    real, calls = Guide.loss, [0]

    def loss(self, *a, **kw):
        calls[0] += 1
        if calls[0] == k:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 50331648 bytes.")
        return real(self, *a, **kw)

    monkeypatch.setattr(Guide, "loss", loss)


def test_cpu_allocation_failure_is_the_out_of_memory_error(monkeypatch, tiny_clip_dir):
    _allocator_failure_at(monkeypatch, 2)
    cfg = RunConfig(prompt="x", clip=(str(tiny_clip_dir),), width=16, height=16, steps=3,
                    cutn=2)
    with pytest.raises(RunOutOfMemoryError, match="at step 2 .*smaller size, fewer cutouts"):
        list(Run(cfg))


def test_in_a_batch_the_item_fails_and_the_next_one_runs(monkeypatch, tiny_clip_dir, tmp_path):
    _allocator_failure_at(monkeypatch, 1)
    lst = tmp_path / "l.txt"
    lst.write_text("one\ntwo\n")
    r = CliRunner().invoke(app, ["batch", str(lst), "--out", str(tmp_path / "out"), "--clip",
                                 str(tiny_clip_dir), "--size", "16", "--steps", "2", "--cutn",
                                 "2", "-q"])
    assert r.exit_code == 1, r.output
    recs = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().split("\n")
            if x]
    assert [(x["prompt"], x["status"]) for x in recs] == [("one", "error"), ("two", "ok")]
    assert "out of memory" in recs[0]["error"]
