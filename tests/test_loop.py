"""The loop and the core generators: contract, determinism, divergence, OOM, cancel."""

import pytest
import torch

from clipforge.config import ConfigError, RunConfig
from clipforge.guidance.augment import Cutouts
from clipforge.guidance.guide import Guide
from clipforge.guidance.prompts import parse_prompt
from clipforge.errors import NonFiniteLossError, RunOutOfMemoryError
from clipforge.loop import Step, optimize
from clipforge.runner import Run, run
from clipforge.registry import build_generator


def cfg(clip_dir, **kw):
    base = dict(prompt="a red circle", clip=(str(clip_dir),), width=32, height=32, steps=4, cutn=4)
    base.update(kw)
    return RunConfig(**base)


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_generator_contract(name):
    g = build_generator(name, 40, 24, generator=torch.Generator().manual_seed(0))
    img = g.render()
    assert img.shape == (1, 3, 24, 40) and 0 <= img.min() and img.max() <= 1
    img.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    g2 = build_generator(name, 40, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g2.render(), g.render().detach())


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_init_from_reproduces_image(name):
    target = torch.rand(1, 3, 16, 24) * 0.8 + 0.1
    g = build_generator(name, 24, 16)
    g.init_from(target)
    assert torch.allclose(g.render(), target, atol=1e-4)


def test_unknown_generator_and_option():
    with pytest.raises(ConfigError, match="pixel"):
        build_generator("nope", 32, 32)
    with pytest.raises(ConfigError, match="decay"):
        build_generator("fourier", 32, 32, options={"wobble": 1})


@pytest.mark.parametrize("name", ["pixel", "fourier"])
def test_ten_steps_lower_the_loss(name, tiny_embedder):
    g = build_generator(name, 32, 32, generator=torch.Generator().manual_seed(0))
    guide = Guide(tiny_embedder, parse_prompt("a red circle"), Cutouts(32, 8))

    def fixed_loss():
        guide.generator = torch.Generator().manual_seed(123)  # same cutouts both times
        with torch.no_grad():
            return guide.loss(g.render())[0].item()

    before = fixed_loss()
    steps = list(optimize(g, guide, 10, lr=0.1))
    assert [s.i for s in steps] == list(range(1, 11)) and all(isinstance(s, Step) for s in steps)
    assert not steps[-1].image.requires_grad and steps[-1].loss.dim() == 0
    assert fixed_loss() < before


def test_same_seed_same_pixels_other_seed_differs(tiny_clip_dir):
    a = run(cfg(tiny_clip_dir, seed=7)).image
    b = run(cfg(tiny_clip_dir, seed=7)).image
    c = run(cfg(tiny_clip_dir, seed=8)).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_steps_returns_initial_image(tiny_clip_dir):
    r = run(cfg(tiny_clip_dir, steps=0))
    assert r.steps == 0 and r.image.shape == (1, 3, 32, 32)


def test_huge_lr_stops_with_error_naming_the_step(tiny_clip_dir):  # BAD_INPUTS row 7
    with pytest.raises(NonFiniteLossError, match=r"step \d+.*lower the learning rate") as e:
        run(cfg(tiny_clip_dir, lr=1e6, steps=30))
    assert e.value.step == 1


def test_nan_loss_detected(tiny_embedder):
    g = build_generator("pixel", 16, 16)

    class NaNGuide:
        def loss(self, image, t):
            loss = image.mean() * float("nan")
            return loss, {"x": loss}

    with pytest.raises(NonFiniteLossError, match="step 1"):
        list(optimize(g, NaNGuide(), 5, check_every=3))


def test_out_of_memory_fails_that_job_and_the_next_works(tiny_clip_dir, monkeypatch):  # row 12
    r = Run(cfg(tiny_clip_dir, steps=6))
    real = r.guide.loss
    calls = []

    def boom(image, t=0.0):
        calls.append(t)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(image, t)

    r.guide.loss = boom
    with pytest.raises(RunOutOfMemoryError, match=r"step 3.*smaller size, fewer cutouts"):
        list(r)
    assert r.generator is None  # released
    assert run(cfg(tiny_clip_dir, steps=3)).steps == 3


def test_closing_the_generator_runs_cleanup(tiny_clip_dir):
    r = Run(cfg(tiny_clip_dir, steps=50))
    it = iter(r)
    next(it)
    next(it)
    it.close()  # what `break` does
    assert r.done == 2
    assert all(p.grad is None for p in r.generator.parameters())


def test_init_image_and_image_prompt(tiny_clip_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20), (250, 10, 10)).save(tmp_path / "red.png")
    r = run(cfg(tiny_clip_dir, prompt="", image_prompts=(str(tmp_path / "red.png"),),
                init_image=str(tmp_path / "red.png"), init_weight=1.0, steps=2))
    assert r.image[0, 0].mean() > 0.8 and r.last.losses.keys() >= {"init"}
    with pytest.raises(Exception, match="cannot read image"):
        Run(cfg(tiny_clip_dir, init_image=str(tmp_path / "missing.png")))


def test_explicit_cuda_without_gpu_is_a_clear_error(tiny_clip_dir):  # row 11
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Run(cfg(tiny_clip_dir, device="cuda"))
    assert Run(cfg(tiny_clip_dir, device="auto")).device.type == "cpu"


@pytest.mark.gpu
def test_gpu_run_bf16_autocast(tiny_clip_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    r = run(cfg(tiny_clip_dir, device="cuda", steps=3))
    assert r.image.device.type == "cuda" and r.image.dtype == torch.float32
    assert r.config.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
