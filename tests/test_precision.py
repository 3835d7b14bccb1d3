"""The precision setting: what ``auto`` picks, what a run records, and that bf16 and the CPU
layouts change the speed, not where the image goes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipforge import precision
from clipforge.config import RunConfig
from clipforge.errors import ConfigError
from clipforge.guidance.augment import Cutouts
from clipforge.guidance.guide import Guide
from clipforge.guidance.prompts import Prompt

CPU = torch.device("cpu")


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has the given flags (on x86)."""
    def set_flags(*names: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
        monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    return set_flags


@pytest.mark.parametrize("have, expected", [
    (("avx512f", "amx_bf16", "amx_tile"), "bf16"),
    (("avx512f", "avx512_bf16"), "bf16"),
    (("avx2", "avx512f"), "fp32"),
    ((), "fp32"),
])
def test_auto_follows_the_cpus_bf16_units(flags, have, expected):
    flags(*have)
    assert precision.resolve_precision("auto", CPU) == expected
    assert precision.resolve_precision("fp32", CPU) == "fp32"   # an explicit choice stands
    assert precision.resolve_precision("bf16", CPU) == "bf16"


def test_auto_is_fp32_off_x86(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    assert precision.resolve_precision("auto", CPU) == "fp32"


def test_cpu_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if "flags" in text:
        assert "fpu" in flags or "sse2" in flags, sorted(flags)[:10]


def test_bf16_on_mps_and_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="precision.*MPS"):
        precision.resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(ConfigError, match="not one of auto, fp32, bf16"):
        precision.resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(prompt="x", precision="half")


def test_a_run_records_the_precision_it_used(tiny_clip_dir, flags):
    from clipforge.runner import Run

    base = dict(prompt="a red circle", clip=(str(tiny_clip_dir),), width=32, height=32,
                steps=1, cutn=2, device="cpu")
    flags("avx512_bf16")
    r = Run(RunConfig(**base))
    assert r.config.precision == "bf16" and r.guide.precision == "bf16"
    flags()
    assert Run(RunConfig(**base)).config.precision == "fp32"
    assert Run(RunConfig(**base, precision="bf16")).config.precision == "bf16"
    # the PNG carries the config: the resolved precision, not "auto"
    assert '"precision": "fp32"' in Run(RunConfig(**base)).config.to_json()


def _grad(emb, image, prec, seed=0, cutn=8):
    guide = Guide(emb, [Prompt(text="a red circle")], Cutouts(emb.image_size, cutn),
                  generator=torch.Generator().manual_seed(seed), precision=prec)
    x = image.clone().requires_grad_(True)
    total, _ = guide.loss(x)
    total.backward()
    return total.detach(), x.grad.flatten().double()


def test_bf16_gradient_agrees_with_fp32_on_a_vit(tiny_embedder):
    assert tiny_embedder._lean_vit   # the lean ViT path, the one bf16 speeds up
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    l32, g32 = _grad(tiny_embedder, image, "fp32")
    l16, g16 = _grad(tiny_embedder, image, "bf16")
    assert F.cosine_similarity(g32, g16, dim=0) >= 0.999
    assert l16.dtype == torch.float32 and abs(float(l16 - l32)) < 1e-2 * abs(float(l32))


def test_resnet_tower_runs_folded_and_channels_last_with_the_same_result():
    import open_clip

    from clipforge.guidance.embedders import ClipEmbedder

    torch.manual_seed(0)
    cfg = dict(embed_dim=16, vision_cfg=dict(image_size=32, layers=[1, 1, 1, 1], width=8,
                                             head_width=8),
               text_cfg=dict(context_length=16, vocab_size=64, width=16, heads=2, layers=1))
    model = open_clip.CLIP(**cfg)
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    emb = ClipEmbedder(model, None, 32)
    assert emb._channels_last and not emb._lean_vit
    # the lean copy: batch norms folded into the convolutions, channels-last
    tower = emb.lean_tower
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.modules())
    conv = next(m for m in tower.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the model itself is untouched: its weights still load into (and save from) open_clip's
    assert set(model.state_dict()) == set(plain)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain.items())
    ref = open_clip.CLIP(**cfg).eval()
    ref.load_state_dict(plain)
    x = torch.rand(3, 3, 32, 32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fa = emb.encode_image(xa)
    fb = F.normalize(ref.encode_image((xb - emb.mean) / emb.std), dim=-1)
    assert torch.allclose(fa, fb, atol=1e-5)
    ga, = torch.autograd.grad(fa[:, 0].sum(), xa)
    gb, = torch.autograd.grad(fb[:, 0].sum(), xb)
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-3)


@pytest.mark.slow
def test_compiled_tower_gives_the_same_features(tiny_embedder):
    x = torch.rand(2, 3, tiny_embedder.image_size, tiny_embedder.image_size)
    eager = tiny_embedder.encode_image(x)
    try:
        compiled = tiny_embedder.compile_tower(True).encode_image(x)
    finally:
        tiny_embedder.compile_tower(False)
    assert torch.allclose(eager, compiled, atol=1e-4)
