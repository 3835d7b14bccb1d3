"""Python API habits (issue 16 point 7): ``from clipforge import Run``, ``result.pil()``,
``RunConfig.from_png``, and the diffusers-style ``callback_on_step_end`` adapter."""

import subprocess
import sys

import numpy as np
import torch

from clipforge.config import RunConfig


def _cfg(tiny_clip_dir, **kw):
    return RunConfig(prompt="a red circle", clip=(str(tiny_clip_dir),), width=24, height=16,
                     steps=3, cutn=2, seed=3, **kw)


def test_top_level_names_stay_lazy():
    code = ("import sys; from clipforge import Run, RunConfig, run, step_end_adapter; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "True"  # Run itself needs torch: the name resolves to the real class
    out = subprocess.run([sys.executable, "-c", "import sys, clipforge; print('torch' in "
                          "sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_class_result_pil_and_from_png(tiny_clip_dir, tmp_path):
    from clipforge import Run, run, save_png

    r = Run(_cfg(tiny_clip_dir))
    assert [s.i for s in r] == [1, 2, 3]
    result = run(_cfg(tiny_clip_dir))
    img = result.pil()
    assert img.mode == "RGB" and img.size == (24, 16) and len(result.images) == 1
    expected = (result.image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(img), expected)
    assert np.array_equal(np.asarray(img), np.asarray(r.image()[0].mul(255).round().byte()
                                                     .permute(1, 2, 0).numpy()))
    save_png(tmp_path / "a.png", result.image, result.config)
    assert RunConfig.from_png(tmp_path / "a.png") == result.config


def test_diffusers_style_callback(tiny_clip_dir):
    from clipforge import run

    seen = []

    def on_step_end(pipe, step_index, timestep, callback_kwargs):
        seen.append((pipe, step_index, timestep, tuple(callback_kwargs["image"].shape),
                     float(callback_kwargs["loss"])))
        return callback_kwargs

    result = run(_cfg(tiny_clip_dir), callback_on_step_end=on_step_end)
    assert [s[:4] for s in seen] == [(None, i, i + 1, (1, 3, 16, 24)) for i in range(3)]
    assert seen[-1][4] == float(result.last.loss)
    assert torch.isfinite(torch.tensor([s[4] for s in seen])).all()
