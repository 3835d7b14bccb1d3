"""Conformance suite: every registered generator honours the same contract.

For the model-backed generators a tiny random model is written in the exact on-disk format users
download (diffusers ``save_pretrained`` folders; a BigGAN ``config.json`` + ``pytorch_model.bin``
in the release layout) and passed through the ``model`` option: the offline stand-in for the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipforge.config import ConfigError
from clipforge.registry import GENERATORS, build_generator, generator_class, generator_options

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions run fastest on one thread when the shared cores are busy (conftest's
    fixture restores the thread count afterwards)."""
    torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# tiny models in their real on-disk formats


def write_tiny_taesd(folder: Path, seed: int = 0) -> Path:
    """A random AutoencoderTiny (TAESD layout: 4 levels, factor 8) via ``save_pretrained``."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(encoder_block_out_channels=(4,) * 4, decoder_block_out_channels=(4,) * 4,
                    num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
                    latent_channels=4).save_pretrained(folder)
    return folder


def write_tiny_kl(folder: Path, seed: int = 0, **config) -> Path:
    """A random AutoencoderKL (Stable Diffusion VAE layout, factor 8) via ``save_pretrained``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(block_out_channels=(8,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1,
                  norm_num_groups=4, latent_channels=4, sample_size=SIZE,
                  **config).save_pretrained(folder)
    return folder


def write_tiny_vq(folder: Path, seed: int = 0, levels: int = 4) -> Path:
    """A random VQModel (taming VQGAN layout, factor 2**(levels-1)) via ``save_pretrained``."""
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(block_out_channels=(8,) * levels,
                 down_block_types=("DownEncoderBlock2D",) * levels,
                 up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=1,
                 norm_num_groups=4, latent_channels=4, num_vq_embeddings=64, sample_size=SIZE)
    with torch.no_grad():  # diffusers initialises codes ~U(-1/K, 1/K); spread them as trained ones
        vq.quantize.embedding.weight.normal_()
    vq.save_pretrained(folder)
    return folder


TINY_BIGGAN = {"output_dim": SIZE, "z_dim": 8, "class_embed_dim": 8, "channel_width": 8,
               "num_classes": 1000, "layers": [[False, 2, 2], [True, 2, 1], [True, 1, 1],
                                               [True, 1, 1]],
               "attention_layer_position": 2, "eps": 1e-4, "n_stats": 51}


def spectral_norm_modules(net):
    """The modules the release wraps in ``torch.nn.utils.spectral_norm`` (all but embeddings)."""
    from clipforge.generators.biggan_net import _Block, _SelfAttn

    g = net.generator
    mods = [g.gen_z, g.conv_to_rgb]
    for layer in g.layers:
        if isinstance(layer, _Block):
            mods += [getattr(layer, f"conv_{i}") for i in range(4)]
            mods += [m for i in range(4) for m in (getattr(layer, f"bn_{i}").scale,
                                                    getattr(layer, f"bn_{i}").offset)]
        elif isinstance(layer, _SelfAttn):
            mods += [layer.snconv1x1_theta, layer.snconv1x1_phi, layer.snconv1x1_g,
                     layer.snconv1x1_o_conv]
    return mods


def write_tiny_biggan(folder: Path, seed: int = 0, config: dict = TINY_BIGGAN) -> dict:
    """A random BigGAN-deep in the release layout: spectral-norm tensors, torch.save'd state dict.

    Returns the weights PyTorch's own ``spectral_norm`` computes in eval mode (the reference).
    """
    from torch.nn.utils.spectral_norm import SpectralNorm

    from clipforge.generators.biggan_net import BigGANDeep

    torch.manual_seed(seed)
    net = BigGANDeep(config)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_means"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_vars"):
                buf.uniform_(0.5, 1.5)
        for mod in net.modules():
            if hasattr(mod, "gamma"):
                mod.gamma.fill_(0.5)
    reference = {}
    for mod in spectral_norm_modules(net):
        torch.nn.utils.spectral_norm(mod, eps=config["eps"])
        mod(torch.zeros(1, mod.in_features) if isinstance(mod, torch.nn.Linear)
            else torch.zeros(1, mod.in_channels, 4, 4))  # one power iteration (train mode)
    net.eval()
    for name, mod in net.named_modules():
        for hook in mod._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                reference[name + ".weight"] = hook.compute_weight(mod, do_power_iteration=False)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    return reference


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_generators")
    out = {"taesd": write_tiny_taesd(root / "taesd"), "kl": write_tiny_kl(root / "kl"),
           "vq": write_tiny_vq(root / "vq")}
    write_tiny_biggan(root / "biggan")
    out["biggan"] = root / "biggan"
    from test_diffusion import write_tiny_sd  # a Stable Diffusion-format pipeline (VAE factor 2)

    out["sd"] = write_tiny_sd(root / "sd")
    return out


# name -> variants: (id, options from the tiny model folders, learning rate, bad size)
VARIANTS = {
    "pixel": [("pixel", lambda m: {}, 0.05, None),
              ("pixel-level-decay", lambda m: {"level_decay": 1.0, "min_size": 1}, 0.05, None)],
    "fourier": [("fourier", lambda m: {}, 0.05, None)],
    "vae": [("vae-tiny", lambda m: {"model": str(m["taesd"])}, 0.1, (33, 32, "32x32")),
            ("vae-kl", lambda m: {"model": str(m["kl"])}, 0.1, (SIZE, 44, "32x48"))],
    "vqgan": [("vqgan", lambda m: {"model": str(m["vq"]), "subfolder": None}, 0.2,
               (SIZE, 36, "32x32"))],
    "biggan": [("biggan", lambda m: {"model": str(m["biggan"])}, 0.05, (48, 48, "32x32"))],
    # the bundled shapes DDPM (stride 4) and a tiny SD-format latent pipeline (stride 2)
    "noise": [("noise", lambda m: {"sampler_steps": 2}, 0.05, (33, 32, "32x32")),
              # a random UNet moves its image little per unit of noise: a larger step
              ("noise-sd", lambda m: {"model": str(m["sd"]), "sampler_steps": 1}, 0.3,
               (33, 32, "32x32"))],
}

CASES = [pytest.param(name, *v, id=v[0]) for name in GENERATORS
         for v in VARIANTS.get(name, [(name, None, None, None)])]


def _build(name, options, tiny_models, *, seed=0, batch=1, size=(SIZE, SIZE)):
    cls = generator_class(name)
    if hasattr(cls, "sample"):
        pytest.skip(f"{name!r} is a GuidedSampler (sample() drives it, not the optimizer "
                    "loop); its own tests cover it")
    if options is None:
        pytest.fail(f"generator {name!r} is registered but has no tiny test config: add it to "
                    "VARIANTS in tests/test_generators.py")
    return build_generator(name, *size, options=options(tiny_models), batch=batch,
                           generator=torch.Generator().manual_seed(seed))


def _trainable(gen):
    return [p for p in gen.parameters() if p.requires_grad]


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_render_shape_range_and_finite(name, vid, options, lr, bad, tiny_models):
    gen = _build(name, options, tiny_models, batch=2)
    img = gen.render()
    assert img.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1
    assert img.std() > 0  # not a constant image


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_gradients_reach_every_parameter(name, vid, options, lr, bad, tiny_models):
    gen = _build(name, options, tiny_models)
    params = _trainable(gen)
    assert params, "a generator needs trainable parameters"
    (gen.render() - 0.3).square().mean().backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    frozen = [p for p in gen.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)  # model weights stay frozen


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_same_seed_same_image(name, vid, options, lr, bad, tiny_models):
    a = _build(name, options, tiny_models, seed=3).render()
    b = _build(name, options, tiny_models, seed=3).render()
    c = _build(name, options, tiny_models, seed=4).render()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_rejects_sizes_it_cannot_make(name, vid, options, lr, bad, tiny_models):
    if bad is None:
        _build(name, options, tiny_models, size=(33, 17))  # any size >= 1 works
        pytest.skip(f"{name!r} makes every size")
    w, h, near = bad
    with pytest.raises(ConfigError, match=f"nearest allowed: {near}") as e:
        _build(name, options, tiny_models, size=(w, h))
    assert e.value.field == "size"


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_ten_steps_of_the_loop_lower_the_loss(name, vid, options, lr, bad, tiny_models,
                                              tiny_embedder):
    from clipforge.guidance.augment import Cutouts
    from clipforge.guidance.guide import Guide
    from clipforge.guidance.prompts import Prompt
    from clipforge.loop import optimize

    gen = _build(name, options, tiny_models)
    # fp32: ten steps on a tiny random CLIP lower the loss by ~1e-4, below bf16's resolution
    guide = Guide(tiny_embedder, [Prompt("a red circle")], Cutouts(32, 4, augment=False),
                  precision="fp32")

    def fixed_loss():  # the same cutouts every time, so only the image changes the score
        guide.generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return float(guide.loss(gen.render())[0])

    before = fixed_loss()
    steps = list(optimize(gen, guide, 10, lr=lr))
    guide.generator = torch.Generator().manual_seed(0)
    assert len(steps) == 10 and all(torch.isfinite(s.loss) for s in steps)
    assert fixed_loss() < before


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_init_from_image_when_supported(name, vid, options, lr, bad, tiny_models):
    gen = _build(name, options, tiny_models)
    if not hasattr(gen, "init_from"):
        pytest.skip(f"{name!r} has no encoder; Run refuses init images for it")
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    gen.init_from(image)
    first = gen.render().detach()
    gen.init_from(image)
    assert torch.equal(first, gen.render().detach())
    assert first.shape == (1, 3, SIZE, SIZE) and torch.isfinite(first).all()


@pytest.mark.parametrize("name,vid,options,lr,bad", CASES)
def test_options_are_listed(name, vid, options, lr, bad, tiny_models):
    if options is None:
        _build(name, options, tiny_models)  # skips samplers, fails for untested generators
    opts = generator_options(name)
    assert set(options(tiny_models)) <= set(opts)


# ---------------------------------------------------------------------------------------------
# steering with the bundled shapes CLIP (another engineer trains it; skipped while absent)

SHAPES_DIR = Path(__file__).resolve().parent.parent / "clipforge" / "assets" / "shapes"
STEER_FAST = {"pixel", "fourier"}


@pytest.mark.parametrize("name,vid,options,lr,bad", [
    pytest.param(*c.values, id=c.id, marks=() if c.values[0] in STEER_FAST
                 else (pytest.mark.slow,)) for c in CASES])
def test_red_and_blue_prompts_steer_colours(name, vid, options, lr, bad, tiny_models):
    if not SHAPES_DIR.is_dir():
        pytest.skip(f"the bundled shapes CLIP is absent ({SHAPES_DIR}); it is trained by "
                    "scripts/make_bundled_models.py")
    from clipforge.guidance.augment import Cutouts
    from clipforge.guidance.clip_models import load_embedder
    from clipforge.guidance.guide import Guide
    from clipforge.guidance.prompts import Prompt
    from clipforge.loop import optimize

    clip = load_embedder("shapes")
    red_minus_blue = {}
    for colour in ("red", "blue"):
        gen = _build(name, options, tiny_models, size=(SIZE, SIZE))
        prompt = Prompt(f"a {colour} circle on a {colour} background")
        guide = Guide(clip, [prompt], Cutouts(clip.image_size, 8),
                      generator=torch.Generator().manual_seed(0))
        for _ in optimize(gen, guide, 40, lr=lr):
            pass
        img = gen.render().detach()
        red_minus_blue[colour] = float(img[:, 0].mean() - img[:, 2].mean())
    assert red_minus_blue["red"] > red_minus_blue["blue"], red_minus_blue


# ---------------------------------------------------------------------------------------------
# pixel


def test_pixel_level_decay_slows_the_fine_layers_by_their_gain():
    from clipforge.generators.pixel import PixelGenerator

    g = torch.Generator().manual_seed(0)
    gen = PixelGenerator(32, 32, min_size=4, level_decay=1.0, generator=g)
    assert gen.gains == [1.0, 0.5, 0.25, 0.125]  # sides 4, 8, 16, 32
    # the render is sigmoid of the gain-weighted sum of the upsampled layers
    up = lambda t: torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear",  # noqa: E731
                                                   align_corners=False)
    want = torch.sigmoid(sum(k * up(layer) for k, layer in zip(gen.gains, gen.layers)))
    torch.testing.assert_close(gen.render(), want)
    # one Adam step moves each layer's share of the render by about lr x its gain
    before = [k * up(layer).detach() for k, layer in zip(gen.gains, gen.layers)]
    opt = torch.optim.Adam(gen.parameters(), lr=0.1)
    gen.render().mean().backward()
    opt.step()
    moved = [(k * up(layer).detach() - b).abs().mean().item()
             for k, layer, b in zip(gen.gains, gen.layers, before)]
    assert moved == pytest.approx([0.1 * k for k in gen.gains], rel=0.05)
    # the default keeps the classic pyramid: every gain 1, the same image for the same seed
    plain = PixelGenerator(32, 32, generator=torch.Generator().manual_seed(0))
    zero = PixelGenerator(32, 32, level_decay=0.0, generator=torch.Generator().manual_seed(0))
    assert plain.gains == [1.0] * 4 and torch.equal(plain.render(), zero.render())


# ---------------------------------------------------------------------------------------------
# vae


def test_vae_latent_scaling_and_encoder_init(tmp_path):
    from clipforge.generators.vae import VaeGenerator

    folder = write_tiny_kl(tmp_path / "kl", scaling_factor=0.5, shift_factor=0.25)
    gen = VaeGenerator(SIZE, SIZE, model=str(folder), generator=torch.Generator().manual_seed(0))
    assert (gen.scaling, gen.shift) == (0.5, 0.25)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    gen.init_from(image)
    with torch.no_grad():
        z = gen.vae.encode(image * 2 - 1).latent_dist.mode()
        assert torch.allclose(gen.latent, (z - 0.25) * 0.5)
        expected = ((gen.vae.decode(z).sample + 1) / 2).clamp(0, 1)
        assert torch.allclose(gen.render(), expected, atol=1e-6)


def test_vae_model_dependent_factor_checked_before_loading_weights(tmp_path):
    from diffusers import AutoencoderKL

    folder = tmp_path / "f16"
    AutoencoderKL(block_out_channels=(4,) * 5, down_block_types=("DownEncoderBlock2D",) * 5,
                  up_block_types=("UpDecoderBlock2D",) * 5, layers_per_block=1,
                  norm_num_groups=2, latent_channels=4).save_pretrained(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()  # the size error comes first
    with pytest.raises(ConfigError, match="multiples of 16; nearest allowed: 32x32"):
        build_generator("vae", 40, 24, options={"model": str(folder)})


def test_vae_rejects_other_model_classes(tiny_models):
    with pytest.raises(ConfigError, match="VQModel"):
        build_generator("vae", SIZE, SIZE, options={"model": str(tiny_models["vq"])})


def test_vae_hub_id_goes_through_hf_hub_download_and_from_pretrained(tiny_models, monkeypatch):
    import diffusers
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, subfolder=None, **kw):
        calls.append(("download", repo_id, filename, subfolder))
        assert repo_id == "someorg/sd-vae"
        return str(tiny_models["kl"] / filename)

    real = diffusers.AutoencoderKL.from_pretrained.__func__

    def fake_from_pretrained(cls, name, **kw):
        calls.append(("from_pretrained", name, kw.get("subfolder")))
        return real(cls, str(tiny_models["kl"]))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained",
                        classmethod(fake_from_pretrained))
    gen = build_generator("vae", SIZE, SIZE, options={"model": "someorg/sd-vae",
                                                      "subfolder": "vae"})
    assert calls == [("download", "someorg/sd-vae", "config.json", "vae"),
                     ("from_pretrained", "someorg/sd-vae", "vae")]
    assert gen.render().shape == (1, 3, SIZE, SIZE)


def test_offline_hub_id_error_says_how_to_use_a_local_folder(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    for name in ("vae", "vqgan", "biggan"):
        with pytest.raises(ConfigError, match="someorg/model.*local-dir DIR.*model=DIR") as e:
            build_generator(name, 128, 128, options={"model": "someorg/model"})
        assert e.value.field == "model"


def test_missing_local_folder_is_named(tmp_path):
    missing = tmp_path / "nope"
    for name in ("vae", "vqgan", "biggan"):
        with pytest.raises(ConfigError, match="nope"):
            build_generator(name, SIZE, SIZE, options={"model": str(missing)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        build_generator("vae", SIZE, SIZE, options={"model": str(tmp_path / "empty")})


# ---------------------------------------------------------------------------------------------
# vqgan


def test_straight_through_quantization_snaps_to_codes_and_passes_gradients():
    from clipforge.generators.vqgan import quantize_straight_through

    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(16, 4, generator=g)
    z = torch.randn(2, 4, 3, 5, generator=g, requires_grad=True)
    q = quantize_straight_through(z, codebook)
    flat = q.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert ((flat[:, None] - codebook[None]).abs().amax(-1).min(1).values < 1e-5).all()
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_vqgan_quantize_option_and_encoder_init(tiny_models):
    opts = {"model": str(tiny_models["vq"]), "subfolder": None}
    on = build_generator("vqgan", SIZE, SIZE, options=opts,
                         generator=torch.Generator().manual_seed(0))
    off = build_generator("vqgan", SIZE, SIZE, options={**opts, "quantize": False},
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the random initial latent is made of codes: both agree at first
        assert torch.allclose(on.render(), off.render(), atol=1e-5)
        for g in (on, off):
            g.latent.add_(0.3)
        assert not torch.allclose(on.render(), off.render(), atol=1e-3)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    on.init_from(image)
    with torch.no_grad():
        assert torch.allclose(on.latent, on.vq.encode(image * 2 - 1).latents)
        assert torch.allclose(on.render(), ((on.vq.decode(on.latent).sample + 1) / 2).clamp(0, 1),
                              atol=1e-5)


def test_vqgan_default_hub_model_and_subfolder(tmp_path, monkeypatch):
    """No options: the default hub id and its ``vqvae`` subfolder go to the hub functions."""
    import diffusers
    import huggingface_hub

    repo = tmp_path / "vq-diffusion-ithq"
    write_tiny_vq(repo / "vqvae")
    calls = []

    def fake_download(repo_id, filename, subfolder=None, **kw):
        calls.append((repo_id, filename, subfolder))
        return str(repo / subfolder / filename)

    real = diffusers.VQModel.from_pretrained.__func__

    def fake_from_pretrained(cls, name, **kw):
        calls.append((name, kw.get("subfolder")))
        return real(cls, str(repo), subfolder=kw["subfolder"])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(diffusers.VQModel, "from_pretrained", classmethod(fake_from_pretrained))
    gen = build_generator("vqgan", SIZE, SIZE)
    assert calls == [("microsoft/vq-diffusion-ithq", "config.json", "vqvae"),
                     ("microsoft/vq-diffusion-ithq", "vqvae")]
    assert gen.render().shape == (1, 3, SIZE, SIZE)


def test_vqgan_f16_model_checked_against_16(tmp_path):
    folder = write_tiny_vq(tmp_path / "f16", levels=5)
    with pytest.raises(ConfigError, match="multiples of 16; nearest allowed: 32x64"):
        build_generator("vqgan", 40, 56, options={"model": str(folder), "subfolder": None})
    gen = build_generator("vqgan", 48, 32, options={"model": str(folder), "subfolder": None})
    assert gen.latent.shape[-2:] == (2, 3)


# ---------------------------------------------------------------------------------------------
# biggan

# keys of a release checkpoint for TINY_BIGGAN (layer 2 is the attention block)
RELEASE_KEYS = [
    "embeddings.weight",
    "generator.gen_z.bias", "generator.gen_z.weight_orig", "generator.gen_z.weight_u",
    "generator.gen_z.weight_v",
    "generator.layers.0.bn_0.running_means", "generator.layers.0.bn_0.running_vars",
    "generator.layers.0.bn_0.scale.weight_orig", "generator.layers.0.bn_0.scale.weight_u",
    "generator.layers.0.bn_0.scale.weight_v", "generator.layers.0.bn_0.offset.weight_orig",
    "generator.layers.0.conv_0.bias", "generator.layers.0.conv_0.weight_orig",
    "generator.layers.0.conv_3.weight_v",
    "generator.layers.2.gamma", "generator.layers.2.snconv1x1_theta.weight_orig",
    "generator.layers.2.snconv1x1_phi.weight_u", "generator.layers.2.snconv1x1_g.weight_v",
    "generator.layers.2.snconv1x1_o_conv.weight_orig",
    "generator.layers.4.bn_3.offset.weight_orig",
    "generator.bn.weight", "generator.bn.bias", "generator.bn.running_means",
    "generator.bn.running_vars",
    "generator.conv_to_rgb.bias", "generator.conv_to_rgb.weight_orig",
    "generator.conv_to_rgb.weight_u", "generator.conv_to_rgb.weight_v",
]


def test_biggan_checkpoint_has_the_release_key_layout(tmp_path):
    from clipforge.weights import load_state_dict

    write_tiny_biggan(tmp_path)
    sd = load_state_dict(tmp_path / "pytorch_model.bin")  # torch.load(weights_only=True)
    assert set(RELEASE_KEYS) <= set(sd)
    assert not any(k.endswith(".weight") and k.replace(".weight", ".weight_orig") in sd
                   for k in sd)
    assert sd["generator.layers.0.bn_0.running_means"].shape == (51, 16)
    assert sd["generator.conv_to_rgb.weight_orig"].shape == (8, 8, 3, 3)


def test_biggan_spectral_norm_folded_as_pytorch_computes_it(tmp_path):
    from clipforge.generators.biggan_net import load_biggan

    reference = write_tiny_biggan(tmp_path, seed=1)
    net = load_biggan(str(tmp_path))
    params = dict(net.named_parameters())
    assert len(reference) == 2 + 4 * 2 * 4 + 4 * 4 + 4  # every spectral-norm module
    for name, w in reference.items():
        assert torch.allclose(params[name], w, rtol=1e-5, atol=1e-7), name
    # and the fold is not the identity: sigma differs from 1
    raw = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert not torch.allclose(raw["generator.gen_z.weight_orig"], params["generator.gen_z.weight"])


def test_biggan_generator_matches_the_reference_network(tmp_path):
    """Same z and classes through the loaded generator and a spectral-norm copy of the network."""
    from clipforge.generators.biggan_net import BigGANDeep

    reference = write_tiny_biggan(tmp_path, seed=2)
    gen = build_generator("biggan", SIZE, SIZE, options={"model": str(tmp_path),
                                                         "truncation": 0.5},
                          generator=torch.Generator().manual_seed(0))
    ref = BigGANDeep(TINY_BIGGAN)
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    plain = {k: v for k, v in sd.items() if not k.endswith(("_orig", "_u", "_v"))}
    ref.load_state_dict({**plain, **reference})
    with torch.no_grad():
        out = ref.eval()(gen.z, torch.softmax(gen.class_logits, 1), 0.5)
        assert torch.allclose(gen.render(), (out + 1) / 2, atol=1e-6)
        # on the grid of stored statistics exactly one row is used
        assert ref.stats_index(0.5) == (25, 26, 0.0)


def test_biggan_hub_id_downloads_config_and_weights(tiny_models, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        return str(tiny_models["biggan"] / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    gen = build_generator("biggan", SIZE, SIZE, options={"model": "someorg/biggan-deep-tiny"})
    assert ("someorg/biggan-deep-tiny", "config.json") in calls
    assert ("someorg/biggan-deep-tiny", "pytorch_model.bin") in calls
    assert gen.render().shape == (1, 3, SIZE, SIZE)


def test_biggan_classes_by_index_and_name_and_top_k(tiny_models):
    opts = {"model": str(tiny_models["biggan"])}
    gen = build_generator("biggan", SIZE, SIZE, options={**opts, "classes": [1, "Tench"]},
                          batch=2)
    p = gen.class_probs()
    assert p.shape == (2, 1000) and torch.allclose(p.sum(1), torch.ones(2))
    assert (p[:, [0, 1]].sum(1) > 0.9).all()  # goldfish is 1, tench is 0
    gen = build_generator("biggan", SIZE, SIZE, options={**opts, "top_k": 3})
    assert int((gen.class_probs() > 0).sum()) == 3
    gen.render().sum().backward()
    assert int((gen.class_logits.grad != 0).sum()) == 3
    with pytest.raises(ConfigError, match="(?i)unknown ImageNet class .golden.*golden retriever"):
        build_generator("biggan", SIZE, SIZE, options={**opts, "classes": ["golden"]})
    with pytest.raises(ConfigError, match="outside 0..999"):
        build_generator("biggan", SIZE, SIZE, options={**opts, "classes": [1000]})
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="truncation"):
            build_generator("biggan", SIZE, SIZE, options={**opts, "truncation": bad})


def test_biggan_initial_z_is_truncated(tiny_models):
    gen = build_generator("biggan", SIZE, SIZE, batch=64,
                          options={"model": str(tiny_models["biggan"]), "truncation": 0.3})
    assert gen.z.abs().max() <= 2 * 0.3
    assert not hasattr(gen, "init_from")  # no encoder: Run refuses init images up front


def test_biggan_config_and_weights_mismatch_is_clear(tmp_path):
    write_tiny_biggan(tmp_path)
    cfg = dict(TINY_BIGGAN, output_dim=64)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="layers make 32 px but output_dim is 64"):
        build_generator("biggan", 64, 64, options={"model": str(tmp_path)})
    cfg = dict(TINY_BIGGAN, channel_width=16)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="do not match its config|size mismatch"):
        build_generator("biggan", SIZE, SIZE, options={"model": str(tmp_path)})


# ---------------------------------------------------------------------------------------------
# taming-transformers checkpoint conversion

TAMING_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 4
    n_embed: 32
    ddconfig:
      double_z: false
      z_channels: 8
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2]
      num_res_blocks: 1
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
"""


SENTINEL: dict[str, Path] = {}


class ModelCheckpointStandIn:
    """Pickled beside the weights like Lightning's callbacks; its code must never run on load."""

    def __init__(self):
        self.best_model_path = "last.ckpt"

    def __setstate__(self, state):
        SENTINEL["path"].write_text("code from the checkpoint ran")


class MaliciousReduce:
    def __reduce__(self):
        return (Path.write_text, (SENTINEL["path"], "code from the checkpoint ran"))


def taming_names(levels: int, blocks: int, attn_levels: set[int]):
    """(taming key prefix, diffusers key prefix) pairs, written from taming's module tree."""
    pairs = [("encoder.conv_in", "encoder.conv_in"), ("decoder.conv_in", "decoder.conv_in"),
             ("encoder.norm_out", "encoder.conv_norm_out"),
             ("encoder.conv_out", "encoder.conv_out"),
             ("decoder.norm_out", "decoder.conv_norm_out"),
             ("decoder.conv_out", "decoder.conv_out"),
             ("quant_conv", "quant_conv"), ("post_quant_conv", "post_quant_conv"),
             ("quantize.embedding", "quantize.embedding")]
    for side in ("encoder", "decoder"):
        pairs += [(f"{side}.mid.block_1", f"{side}.mid_block.resnets.0"),
                  (f"{side}.mid.block_2", f"{side}.mid_block.resnets.1"),
                  (f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0")]
    for i in range(levels):
        for j in range(blocks):
            pairs.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}"))
            if i in attn_levels:
                pairs.append((f"encoder.down.{i}.attn.{j}",
                              f"encoder.down_blocks.{i}.attentions.{j}"))
        if i != levels - 1:
            pairs.append((f"encoder.down.{i}.downsample.conv",
                          f"encoder.down_blocks.{i}.downsamplers.0.conv"))
        k = levels - 1 - i  # taming's up[i] runs in reverse order
        for j in range(blocks + 1):
            pairs.append((f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{k}.resnets.{j}"))
            if i in attn_levels:
                pairs.append((f"decoder.up.{i}.attn.{j}", f"decoder.up_blocks.{k}.attentions.{j}"))
        if i != 0:
            pairs.append((f"decoder.up.{i}.upsample.conv",
                          f"decoder.up_blocks.{k}.upsamplers.0.conv"))
    return pairs


def to_taming(diffusers_sd: dict, pairs) -> dict:
    leaf = {"conv_shortcut": "nin_shortcut", "group_norm": "norm", "to_q": "q", "to_k": "k",
            "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in diffusers_sd.items():
        tam_prefix, d_prefix = max(((t, d) for t, d in pairs if key.startswith(d + ".")),
                                   key=lambda p: len(p[1]))
        rest = key[len(d_prefix) + 1:]
        for d, t in leaf.items():
            if rest.startswith(d + "."):
                rest = t + rest[len(d):]
        if ".attentions." in d_prefix or ".attn" in tam_prefix:
            if value.dim() == 2:
                value = value[:, :, None, None]
        out[f"{tam_prefix}.{rest}"] = value.clone()
    out["loss.discriminator.main.0.weight"] = torch.zeros(1)
    return out


def test_taming_checkpoint_converts_to_a_diffusers_vqmodel(tmp_path):
    import yaml
    from diffusers import VQModel

    from clipforge.generators.taming import convert_taming_checkpoint, taming_config_to_diffusers

    params = yaml.safe_load(TAMING_YAML)["model"]["params"]
    torch.manual_seed(0)
    original = VQModel(**taming_config_to_diffusers(params)).eval()
    assert list(original.config.down_block_types) == ["DownEncoderBlock2D",
                                                      "AttnDownEncoderBlock2D"]
    taming_sd = to_taming(original.state_dict(), taming_names(2, 1, {1}))
    assert "encoder.down.1.attn.0.q.weight" in taming_sd
    assert "decoder.up.1.upsample.conv.weight" in taming_sd
    assert taming_sd["encoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)
    SENTINEL["path"] = tmp_path / "pwned"
    torch.save({"state_dict": taming_sd, "epoch": 3,  # Lightning 1.x keys callbacks by class
                "callbacks": {ModelCheckpointStandIn: ModelCheckpointStandIn()}},
               tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text(TAMING_YAML)

    out = convert_taming_checkpoint(tmp_path / "last.ckpt", tmp_path / "model.yaml",
                                    tmp_path / "vqgan-diffusers")
    assert not SENTINEL["path"].exists()  # nothing from the pickle ran
    assert (out / "config.json").is_file()
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    converted = VQModel.from_pretrained(out).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(converted(x).sample, original(x).sample, atol=1e-5)
    gen = build_generator("vqgan", 32, 32, options={"model": str(out), "subfolder": None})
    assert gen.render().shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="already exists"):
        convert_taming_checkpoint(tmp_path / "last.ckpt", tmp_path / "model.yaml", out)
    from typer.testing import CliRunner

    from clipforge.cli import app

    cli_args = ["convert-vqgan", str(tmp_path / "last.ckpt"), str(tmp_path / "model.yaml"),
                str(tmp_path / "via-cli")]
    r = CliRunner().invoke(app, cli_args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "via-cli" / "diffusion_pytorch_model.safetensors").is_file()
    r = CliRunner().invoke(app, cli_args)
    assert r.exit_code == 2 and "already exists" in r.stderr
    (tmp_path / "gumbel.yaml").write_text(TAMING_YAML.replace("vqgan.VQModel", "vqgan.GumbelVQ"))
    with pytest.raises(ConfigError, match="GumbelVQ"):
        convert_taming_checkpoint(tmp_path / "last.ckpt", tmp_path / "gumbel.yaml",
                                  tmp_path / "x")


def test_taming_conversion_refuses_a_malicious_pickle(tmp_path):
    from clipforge.generators.taming import convert_taming_checkpoint

    SENTINEL["path"] = tmp_path / "pwned"
    torch.save({"state_dict": {"quant_conv.weight": torch.zeros(1)}, "x": MaliciousReduce()},
               tmp_path / "evil.ckpt")
    (tmp_path / "model.yaml").write_text(TAMING_YAML)
    with pytest.raises(ConfigError, match="ckpt: cannot load checkpoint"):
        convert_taming_checkpoint(tmp_path / "evil.ckpt", tmp_path / "model.yaml", tmp_path / "o")
    assert not SENTINEL["path"].exists() and not (tmp_path / "o").exists()


def test_taming_conversion_failing_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import yaml
    from diffusers import VQModel

    from clipforge.generators.taming import convert_taming_checkpoint, taming_config_to_diffusers

    params = yaml.safe_load(TAMING_YAML)["model"]["params"]
    original = VQModel(**taming_config_to_diffusers(params))
    torch.save({"state_dict": to_taming(original.state_dict(), taming_names(2, 1, {1}))},
               tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text(TAMING_YAML)

    def half_written(self, folder, **kw):
        (Path(folder) / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VQModel, "save_pretrained", half_written)
    with pytest.raises(OSError, match="No space left"):
        convert_taming_checkpoint(tmp_path / "last.ckpt", tmp_path / "model.yaml",
                                  tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "model.yaml"]


# ---------------------------------------------------------------------------------------------
# the README section (docs/generators.md): every snippet runs, with the hub served offline

DOCS = Path(__file__).resolve().parent.parent / "docs" / "generators.md"
TINY_BIGGAN_128 = dict(TINY_BIGGAN, output_dim=128, layers=[[False, 2, 2], [True, 2, 1]] + [
    [True, 1, 1]] * 4)


def test_docs_generators_snippets_run(tmp_path, tiny_models, monkeypatch):
    import re

    import diffusers
    import huggingface_hub
    import yaml
    from diffusers import VQModel

    from clipforge.generators.taming import taming_config_to_diffusers

    write_tiny_biggan(tmp_path / "biggan128", config=TINY_BIGGAN_128)
    hub = {"madebyollin/taesd": tiny_models["taesd"],
           "stabilityai/sd-vae-ft-mse": tiny_models["kl"],
           "osanseviero/BigGAN-deep-128": tmp_path / "biggan128"}

    def fake_download(repo_id, filename, subfolder=None, **kw):
        return str(hub[repo_id] / (subfolder or "") / filename)

    real = diffusers.ModelMixin.from_pretrained.__func__
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained",
                        classmethod(lambda cls, name, **kw: real(cls, str(hub.get(name, name)),
                                                                 **kw)))
    f16_yaml = TAMING_YAML.replace("ch_mult: [1, 2]", "ch_mult: [1, 1, 1, 1, 1]").replace(
        "attn_resolutions: [16]", "attn_resolutions: [2]")  # the f16 layout, 32 channels
    params = yaml.safe_load(f16_yaml)["model"]["params"]
    original = VQModel(**taming_config_to_diffusers(params))
    torch.save({"state_dict": to_taming(original.state_dict(), taming_names(5, 1, {4}))},
               tmp_path / "vqgan_imagenet_f16_16384.ckpt")
    (tmp_path / "vqgan_imagenet_f16_16384.yaml").write_text(f16_yaml)
    monkeypatch.chdir(tmp_path)

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), namespace)
    assert namespace["image"].shape == (1, 3, 256, 256)
    assert namespace["gen"].render().shape[-2:] == (256, 256)  # the vqgan of the last snippet
    assert (tmp_path / "vqgan-f16" / "config.json").is_file()


def test_clamp_with_grad_lets_inward_gradients_through():
    from clipforge.generators.clamp import clamp_with_grad

    x = torch.tensor([-0.5, -0.5, 0.5, 1.5, 1.5], requires_grad=True)
    y = clamp_with_grad(x)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    # descent moves x by -grad: -1 raises x (inward below 0), +1 lowers x (inward above 1)
    y.backward(torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0]))
    assert torch.equal(x.grad, torch.tensor([-1.0, 0.0, 1.0, 1.0, 0.0]))


def test_pipeline_folder_without_subfolder_gets_a_hint(tmp_path, tiny_models):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match="subfolder="):
        build_generator("vae", SIZE, SIZE, options={"model": str(tmp_path)})


@pytest.mark.slow
def test_memory_benchmark_runs(tmp_path):
    """The command of the Memory section, on the pixel generator and a small size (two fresh
    Python processes: ~20 s on a busy 2-core machine, hence slow)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "generator_memory.py"
    proc = subprocess.run([sys.executable, str(script), "--only", "pixel", "--sizes", "64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = proc.stdout.strip().splitlines()[-1].strip("| ").split(" | ")
    assert row[:2] == ["pixel", "64"]
    loaded, step, peak = (float(v) for v in row[2:5])
    assert loaded > 0 and step >= 0 and peak >= loaded


def test_run_refuses_an_init_image_for_biggan(tiny_models, tiny_clip_dir, tmp_path):
    from PIL import Image

    from clipforge.config import RunConfig
    from clipforge.runner import Run

    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "init.png")
    cfg = RunConfig(prompt="a red circle", generator="biggan", width=SIZE, height=SIZE,
                    generator_options={"model": str(tiny_models["biggan"])},
                    init_image=str(tmp_path / "init.png"), clip=(str(tiny_clip_dir),),
                    device="cpu", steps=1)
    with pytest.raises(ConfigError, match="'biggan' cannot start from an image") as e:
        Run(cfg)
    assert e.value.field == "init_image"


def test_option_values_of_the_wrong_type_are_refused_by_the_one_check():
    """BAD_INPUTS row 28: a wrong type is named with what the option takes, before any build
    (it used to reach the generator as `'<' not supported between 'str' and 'int'`)."""
    from clipforge import registry
    from clipforge.errors import ConfigError

    for options, message in [({"min_size": "4"}, "generator 'pixel' option min_size: expected a "
                                                 "whole number, got '4'"),
                             ({"min_size": 1.5}, "expected a whole number, got 1.5"),
                             ({"pyramid": "yes"}, "generator 'pixel' option pyramid: expected "
                                                  "true or false"),
                             ({"init_std": float("nan")}, "init_std: must be finite"),
                             ({"init_std": None}, "init_std: expected a number, got None")]:
        with pytest.raises(ConfigError, match=message):
            registry.check_generator("pixel", 32, 32, options)
    registry.check_generator("pixel", 32, 32, {"min_size": 8, "init_std": 0})  # int for float
    registry.check_generator("vqgan", 32, 32, {"subfolder": None})  # annotated `str | None`
