"""Training on real data (issue 16 point 9): image-caption folders are decoded lazily, batch by
batch; train-clip takes --device and resumes on another device than it started on."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.errors import DataError
from clipforge.training import data as D
from clipforge.training.trainer import train

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    for i in range(12):
        name = list(COLOURS)[i % 3]
        Image.new("RGB", (40 + i, 36), COLOURS[name]).save(d / f"{i:02d}.png")
        (d / f"{i:02d}.txt").write_text(f"a {name} square")
    return d


def test_images_are_decoded_batch_by_batch(folder, monkeypatch):
    calls = []
    real = D.load_image_fitted
    monkeypatch.setattr(D, "load_image_fitted", lambda p, s: calls.append(p) or real(p, s))
    src = D.make_source(folder, 32, 4)
    assert calls == [] and not any(torch.is_tensor(v) and v.dim() == 4
                                   for v in vars(src).values())  # nothing decoded, none held
    batch = src.next(torch.Generator().manual_seed(0))
    assert len(calls) == 4 and batch.images.shape == (4, 3, 32, 32)
    for path, img in zip(calls, batch.images):
        assert torch.equal((img * 255).round().to(torch.uint8), real(path, 32))
        assert np.allclose(img[:, 16, 16].numpy() * 255,
                           COLOURS[path.with_suffix(".txt").read_text().split()[1]], atol=1)


def test_unreadable_image_is_caught_before_training(folder):
    (folder / "05.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="05.png"):
        D.make_source(folder, 32, 4)


def test_train_on_cpu_then_resume(folder, tmp_path):
    ckpt = tmp_path / "run.ckpt.pt"
    first = train(folder, "tiny", steps=2, batch_size=4, seed=1, checkpoint=ckpt,
                  device="cpu", eval_n=0)
    assert first.step == 2
    more = train(folder, "tiny", steps=4, batch_size=4, seed=1, resume=ckpt, device="auto",
                 eval_n=0)
    whole = train(folder, "tiny", steps=4, batch_size=4, seed=1, device="cpu", eval_n=0)
    assert more.step == 4 and more.losses == pytest.approx(whole.losses[2:], rel=1e-5)


def test_cli_device_flag(folder, tmp_path):
    r = CliRunner().invoke(app, ["train-clip", str(folder), "--config", "tiny", "--steps", "1",
                                 "--batch-size", "4", "--device", "cpu", "-q",
                                 "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    if not torch.cuda.is_available():
        r = CliRunner().invoke(app, ["train-clip", str(folder), "--config", "tiny", "--steps",
                                     "1", "--device", "cuda", "--out", str(tmp_path / "n")])
        assert r.exit_code == 2 and "CUDA is not available" in r.stderr


@pytest.mark.gpu
def test_resume_a_cuda_run_on_the_cpu(folder, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ckpt = tmp_path / "run.ckpt.pt"
    train(folder, "tiny", steps=2, batch_size=4, seed=1, checkpoint=ckpt, device="cuda",
          eval_n=0)
    more = train(folder, "tiny", steps=4, batch_size=4, seed=1, resume=ckpt, device="cpu",
                 eval_n=0)
    assert more.step == 4 and all(np.isfinite(more.losses))
    assert next(more.model.parameters()).device.type == "cpu"
