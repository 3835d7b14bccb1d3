"""Exact resume of one run: checkpoint mid-way, restore, finish pixel-identical."""

from __future__ import annotations

import pickle

import pytest
import torch
from typer.testing import CliRunner

from clipforge.checkpoint import load_checkpoint, restore, save_checkpoint
from clipforge.cli import app
from clipforge.config import ConfigError, RunConfig
from clipforge.guidance.clip_models import ModelCache
from clipforge.runner import Run as _Run

@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny models gain nothing from more, and on a shared machine
    OpenMP threads waiting on each other cost 10-20x (conftest restores the count)."""
    import torch

    torch.set_num_threads(1)


_CACHE = ModelCache()


def Run(cfg: RunConfig) -> _Run:
    """A Run sharing one loaded CLIP across the tests (as a batch worker does)."""
    return _Run(cfg, cache=_CACHE)


def _cfg(tiny_clip_dir, **kw) -> RunConfig:
    base = dict(prompt="a red circle", clip=(str(tiny_clip_dir),), width=16, height=16, steps=6,
                cutn=2, seed=3, schedule="cosine", warmup_steps=2, device="cpu")
    return RunConfig(**{**base, **kw})


def _finish(run: Run) -> torch.Tensor:
    for _ in run:
        pass
    return run.image()


def test_resume_is_pixel_identical(tmp_path, tiny_clip_dir):
    for generator in ("fourier", "pixel"):
        cfg = _cfg(tiny_clip_dir, generator=generator)
        unbroken = _finish(Run(cfg))

        run = Run(cfg)
        for step in run:
            if step.i == 3:
                save_checkpoint(run, tmp_path / "run.ckpt")
                break  # the process "dies" here
        resumed = Run(cfg)
        restore(resumed, load_checkpoint(tmp_path / "run.ckpt"))
        assert resumed.done == 3
        steps = []
        for step in resumed:
            steps.append(step.i)
        assert steps == [4, 5, 6]
        assert torch.equal(resumed.image(), unbroken), generator
        # without the optimizer or RNG state it would differ: the check has teeth
        naive = Run(cfg)
        naive.generator.load_state_dict(load_checkpoint(tmp_path / "run.ckpt").generator)
        naive.done = 3
        assert not torch.equal(_finish(naive), unbroken)


def test_checkpoint_is_written_atomically_and_loads_weights_only(tmp_path, tiny_clip_dir):
    run = Run(_cfg(tiny_clip_dir))
    next(iter(run))
    path = save_checkpoint(run, tmp_path / "a.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
    state = torch.load(path, weights_only=True)  # plain tensors and data only
    assert state["step"] == 1 and state["cutout_rng"].dtype == torch.uint8


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/clipforge-evil-sentinel", "w"))


def test_bad_checkpoints_are_refused(tmp_path, tiny_clip_dir):
    import os

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"format": "clipforge-checkpoint", "x": _Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="resume"):
        load_checkpoint(evil)
    assert not os.path.exists("/tmp/clipforge-evil-sentinel")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(ConfigError, match="not a clipforge checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")

    run = Run(_cfg(tiny_clip_dir))
    next(iter(run))
    save_checkpoint(run, tmp_path / "ok.ckpt")
    with pytest.raises(ConfigError, match="seed=3"):
        restore(Run(_cfg(tiny_clip_dir, seed=4)), load_checkpoint(tmp_path / "ok.ckpt"))


def test_cli_checkpoint_every_and_resume(tmp_path, tiny_clip_dir):
    from PIL import Image
    import numpy as np

    args = ["generate", "a red circle", "--clip", str(tiny_clip_dir), "--size", "16",
            "--steps", "6", "--cutn", "2", "--seed", "5", "--schedule", "cosine", "--quiet",
            "--device", "cpu"]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a.png"),
                                        "--checkpoint-every", "4"])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "a.ckpt"
    assert load_checkpoint(ckpt).step == 4
    # resume from the checkpoint alone: its settings are the default
    r = CliRunner().invoke(app, ["generate", "--resume", str(ckpt), "--quiet",
                                 "--out", str(tmp_path / "b.png")])
    assert r.exit_code == 0, r.output
    assert "resuming at step 4 of 6" in r.stderr
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    # other settings than the checkpoint's are a usage error
    r = CliRunner().invoke(app, ["generate", "--resume", str(ckpt), "--steps", "9", "--quiet",
                                 "--out", str(tmp_path / "c.png")])
    assert r.exit_code == 2 and "steps=6 (now 9)" in r.stderr
    r = CliRunner().invoke(app, args + ["--checkpoint-every", "-1"])
    assert r.exit_code == 2 and "checkpoint_every" in r.stderr
