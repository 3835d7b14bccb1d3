"""The noise-optimization generator (issue 17): a diffusion model's starting noise optimized
through a short DDIM run, on the bundled shapes DDPM and on a tiny Stable Diffusion-format
pipeline written by diffusers' own ``save_pretrained``; the chi-norm prior; the best-iterate
option of the loop; and every front end (CLI, batch, checkpoint, PNG metadata, models list)."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clipforge import pretrained
from clipforge.config import ConfigError, RunConfig
from clipforge.generators.noise import NoiseGenerator, chi_nll
from clipforge.guidance.augment import Cutouts
from clipforge.guidance.guide import Guide
from clipforge.guidance.prompts import Prompt
from clipforge.loop import BestIterate, optimize
from clipforge.registry import build_generator
from test_diffusion import sd_dir, taesd_dir  # noqa: F401 - the same tiny pipelines, as fixtures

PRIOR = pretrained.get("shapes-ddpm", "diffusion").path
needs_prior = pytest.mark.skipif(not (PRIOR / "model_index.json").is_file(),
                                 reason="bundled shapes-ddpm absent (scripts/make_diffusion_prior.py)")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _noise(size=32, seed=0, **options) -> NoiseGenerator:
    return build_generator("noise", size, size, options={"sampler_steps": 2, **options},
                           generator=torch.Generator().manual_seed(seed))


def _guide(embedder, text="a red circle", cutn=2, seed=0) -> Guide:
    return Guide(embedder, [Prompt(text)], Cutouts(embedder.image_size, cutn, augment=False),
                 generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# the chi-norm prior


def test_chi_nll_is_zero_at_the_mode_and_grows_away_from_it():
    d = 3 * 16 * 16
    z = torch.randn(1, 3, 16, 16)
    z = z / z.norm() * math.sqrt(d - 1)  # exactly the mode of the chi distribution
    assert float(chi_nll(z)) == pytest.approx(0.0, abs=1e-4)  # float32 rounding of ~1e3 terms
    small, large = chi_nll(z * 0.8), chi_nll(z * 1.2)
    assert float(small) > 0.01 and float(large) > 0.01
    # near the mode it is about d (rho - 1)^2, as the docstring says
    assert float(chi_nll(z * 1.05)) == pytest.approx((d - 1) * 0.05 ** 2, rel=0.1)
    # one value per sample
    assert chi_nll(torch.cat([z, 2 * z])).shape == (2,)


@needs_prior
def test_regularizer_is_prior_weight_times_the_mean_nll():
    gen = _noise(prior_weight=2.5)
    total, parts = gen.regularizer()
    assert torch.allclose(total, 2.5 * chi_nll(gen.noise).mean())
    assert set(parts) == {"noise_prior"}
    total.backward()
    assert gen.noise.grad.abs().sum() > 0  # the prior pulls on the noise


@needs_prior
def test_prior_keeps_the_noise_norm_in_its_band_over_a_run(tiny_embedder):
    """The stated band (docs/generators.md): at the default prior weight and the run's default
    lr the norm stays within 2% of sqrt(d) (the typical shell; a normal sample's own spread
    for d = 3072 is about 1.3%). Without the prior the same run leaves it."""
    def norms(**options):
        gen = _noise(**options)
        d = gen.noise[0].numel()
        seen = []
        for _ in optimize(gen, _guide(tiny_embedder), 40, lr=0.05):
            seen.append(float(gen.noise.detach().norm()) / math.sqrt(d))
        return seen

    with_prior = norms()  # the default prior_weight
    without = norms(prior_weight=0.0)
    assert all(0.98 <= r <= 1.02 for r in with_prior), with_prior
    assert not all(0.98 <= r <= 1.02 for r in without), without
    reprojected = norms(prior_weight=0.0, reproject=True)
    assert all(r == pytest.approx(1.0, abs=1e-5) for r in reprojected)


# ---------------------------------------------------------------------------------------------
# the generator on the bundled shapes DDPM


@needs_prior
def test_gradients_reach_the_starting_and_injected_noises():
    gen = _noise(sampler_steps=3, eta=0.5, step_noise=True)
    assert len(gen.step_noises) == 2
    params = [p for p in gen.parameters() if p.requires_grad]
    assert len(params) == 3 and params[0] is gen.noise
    (gen.render() - 0.3).square().mean().backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the model's weights are not parameters: the optimizer and a checkpoint hold noises only
    assert set(gen.state_dict()) == {"noise", "step_noises.0", "step_noises.1"}
    fixed = _noise(sampler_steps=3, eta=0.5)  # injected noises drawn once, not optimized
    assert [p.requires_grad for p in fixed.parameters()] == [True, False, False]


@needs_prior
def test_same_seed_same_image_and_eta_noise_is_fixed():
    a, b, c = (_noise(seed=s, eta=0.3).render() for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = _noise(eta=0.3)
    assert torch.equal(gen.render(), gen.render())  # a render is deterministic


@needs_prior
def test_gradient_checkpointing_gives_the_same_gradient():
    grads = []
    for ck in (False, True):
        gen = _noise(sampler_steps=3, checkpointing=ck)
        (gen.render() - 0.3).square().mean().backward()
        grads.append(gen.noise.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_options_are_refused_before_loading(monkeypatch):
    import clipforge.generators.noise as noise

    monkeypatch.setattr(noise, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    for opts, field in [({"sampler_steps": 0}, "sampler_steps"),
                        ({"sampler_steps": 2.5}, "sampler_steps"),
                        ({"prior_weight": -1}, "prior_weight"),
                        ({"prior_weight": float("nan")}, "prior_weight"),
                        ({"eta": 2}, "eta"), ({"dtype": "half"}, "dtype"),
                        ({"reproject": "yes"}, "reproject"),
                        ({"step_noise": True}, "step_noise"),
                        ({"step_noise": True, "eta": 0.5, "sampler_steps": 1}, "step_noise"),
                        ({"model": ""}, "model")]:
        with pytest.raises(ConfigError) as e:
            build_generator("noise", 32, 32, options=opts)
        # the declared-option check names the option in the message (field generator_options)
        assert e.value.field in (field, "generator_options") and field in str(e.value), opts


@needs_prior
def test_size_the_model_cannot_make_names_the_nearest():
    with pytest.raises(ConfigError, match="generator 'noise'.*nearest allowed: 32x32"):
        build_generator("noise", 34, 32)


# ---------------------------------------------------------------------------------------------
# Stable Diffusion-format latent pipelines (tiny, saved by diffusers)


def test_latent_pipeline_renders_differentiably_with_its_text(sd_dir, taesd_dir):
    opts = {"model": str(sd_dir), "sampler_steps": 1}
    gen = build_generator("noise", 16, 16, options=opts, generator=torch.Generator().manual_seed(0))
    assert gen.latent and gen.noise.shape == (1, 4, 8, 8)
    gen.condition_on([Prompt("a red circle"), Prompt("blurry", weight=-1)])
    img = gen.render()
    assert img.shape == (1, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    img.mean().backward()
    assert gen.noise.grad.abs().sum() > 0
    with torch.no_grad():
        other = build_generator("noise", 16, 16, options=opts,
                                generator=torch.Generator().manual_seed(0))
        other.condition_on([Prompt("a blue square")])
        assert not torch.equal(other.render(), img.detach())  # the text conditions the model
        again = build_generator("noise", 16, 16, options=opts,
                                generator=torch.Generator().manual_seed(0))
        again.condition_on([Prompt("a red circle"), Prompt("blurry", weight=-1)])
        assert torch.equal(again.render(), img.detach())
        cfg = build_generator("noise", 16, 16, options={**opts, "cfg_scale": 4.0},
                              generator=torch.Generator().manual_seed(0))
        cfg.condition_on([Prompt("a red circle"), Prompt("blurry", weight=-1)])
        assert not torch.equal(cfg.render(), img.detach())  # classifier-free guidance
        fast = build_generator("noise", 16, 16, options={**opts, "decoder": str(taesd_dir)},
                               generator=torch.Generator().manual_seed(0))
        assert fast.render().shape == (1, 3, 16, 16)
        assert not torch.equal(fast.render(), gen.render())  # TAESD decodes, not the VAE


def test_latent_pipeline_through_a_run_uses_the_prompt(sd_dir, tiny_clip_dir):
    from clipforge.runner import Run

    cfg = RunConfig(prompt="a red circle", generator="noise", clip=(str(tiny_clip_dir),),
                    generator_options={"model": str(sd_dir), "sampler_steps": 2,
                                       "checkpointing": True},
                    width=16, height=16, steps=3, cutn=2, device="cpu", seed=1)
    run = Run(cfg)
    assert run.generator._cond is not None  # conditioned on the run's prompt before step 1
    steps = list(run)
    assert len(steps) == 3 and "noise_prior" in steps[-1].losses
    assert run.image().shape == (1, 3, 16, 16)


# ---------------------------------------------------------------------------------------------
# the best iterate, for any optimized generator


class _WorseLater:
    """A guide whose score is a pull toward light grey plus a term that grows over the run (it moves
    no pixel, so the descent is the same): the best iterate lies inside the run, not at its end."""

    def loss(self, image, t=0.0):
        pull = (image - 0.9).square().mean()
        return pull + 0.02 * t, {"pull": pull}


@pytest.mark.parametrize("name", ["pixel", "noise"])
def test_keep_best_leaves_the_generator_at_the_lowest_scored_iterate(name):
    if name == "noise" and not (PRIOR / "model_index.json").is_file():
        pytest.skip("bundled shapes-ddpm absent")
    options = {"sampler_steps": 2} if name == "noise" else {}
    gen = build_generator(name, 32, 32, options=options,
                          generator=torch.Generator().manual_seed(0))
    best = BestIterate()
    steps = list(optimize(gen, _WorseLater(), 12, lr=0.05, best=best))
    # the guide's score: a step's loss without the generator's own prior
    losses = torch.stack([s.loss - s.losses.get("noise_prior", 0) for s in steps])
    k = int(losses.argmin())
    assert 0 < k < len(steps) - 1, losses
    assert torch.equal(gen.render().detach(), steps[k].image)  # the result is that iterate
    assert torch.allclose(best.score, losses[k])
    last = list(optimize(build_generator(name, 32, 32, options=options,
                                         generator=torch.Generator().manual_seed(0)),
                         _WorseLater(), 12, lr=0.05))
    assert not torch.equal(last[-1].image, steps[k].image)  # without it: a later iterate


def test_keep_best_through_run_and_refused_for_a_sampler(tiny_clip_dir):
    from clipforge.runner import Run

    base = dict(prompt="a red circle", clip=(str(tiny_clip_dir),), width=32, height=32,
                steps=10, cutn=2, device="cpu", lr=0.3)
    run = Run(RunConfig(**base, keep_best=True))
    steps = list(run)
    k = int(torch.stack([s.loss for s in steps]).argmin())
    assert torch.equal(run.image(), steps[k].image.clamp(0, 1))
    with pytest.raises(ConfigError, match="sampler") as e:
        Run(RunConfig(**base, generator="diffusion", keep_best=True))
    assert e.value.field == "keep_best"


# ---------------------------------------------------------------------------------------------
# front ends


@needs_prior
def test_checkpoint_resume_with_noise_optimizer_and_best_state(tmp_path, tiny_clip_dir):
    from clipforge.checkpoint import load_checkpoint, restore, save_checkpoint
    from clipforge.runner import Run

    cfg = RunConfig(prompt="a red circle", generator="noise", clip=(str(tiny_clip_dir),),
                    generator_options={"sampler_steps": 2, "eta": 0.5, "step_noise": True},
                    width=32, height=32, steps=6, cutn=2, device="cpu", seed=2, keep_best=True,
                    lr=0.2)
    straight = Run(cfg)
    list(straight)
    run = Run(cfg)
    for step in run:
        if step.i == 3:
            save_checkpoint(run, tmp_path / "n.ckpt")
            break
    ckpt = load_checkpoint(tmp_path / "n.ckpt")
    assert set(ckpt.generator) == {"noise", "step_noises.0"}  # noises only, no model weights
    assert len(ckpt.optimizer["state"]) == 2 and ckpt.best["score"] is not None
    assert (tmp_path / "n.ckpt").stat().st_size < 200_000
    resumed = Run(cfg)
    restore(resumed, ckpt)
    assert [s.i for s in resumed] == [4, 5, 6]
    assert torch.equal(resumed.image(), straight.image())


@needs_prior
def test_cli_generate_and_batch_write_pngs_with_the_noise_settings(tmp_path, tiny_clip_dir):
    from clipforge.cli import app
    from clipforge.outputs import parse_parameters, read_config, read_png_text

    opts = {"sampler_steps": 2, "prior_weight": 0.5}
    common = ["--clip", str(tiny_clip_dir), "--generator", "noise", "--size", "32", "--steps",
              "2", "--cutn", "2", "--generator-options", json.dumps(opts), "--device", "cpu"]
    r = CliRunner().invoke(app, ["generate", "a red circle", *common, "--keep-best", "-q",
                                 "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    cfg = read_config(tmp_path / "a.png")
    assert cfg.generator == "noise" and dict(cfg.generator_options) == opts and cfg.keep_best
    fields = parse_parameters(read_png_text(tmp_path / "a.png")["parameters"])
    assert fields["Generator"] == "noise"
    shown = json.loads(fields["Generator options"])  # the effective options, defaults included
    assert {**opts, "model": "shapes-ddpm", "eta": 0.0, "checkpointing": False}.items() <= \
        shown.items()
    (tmp_path / "list.txt").write_text("a red circle\na blue square\n")
    r = CliRunner().invoke(app, ["batch", str(tmp_path / "list.txt"), *common, "-q",
                                 "--out", str(tmp_path / "batch")])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "batch").glob("*.png"))
    assert len(pngs) == 2 and all(read_config(p).generator == "noise" for p in pngs)


def test_models_lists_the_noise_generator_and_its_options():
    from clipforge.cli import app

    r = CliRunner().invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    row = next(g for g in json.loads(r.stdout)["generators"] if g["name"] == "noise")
    assert {"model": "shapes-ddpm", "sampler_steps": 4, "prior_weight": 1.0,
            "checkpointing": False, "reproject": False, "step_noise": False,
            "eta": 0.0}.items() <= row["options"].items()
    text = CliRunner().invoke(app, ["models"]).stdout
    assert "noise" in text and "sampler_steps=4" in text


@needs_prior
def test_studio_previews_the_current_render_and_pauses_with_the_noise_state(tiny_clip_dir,
                                                                          tmp_path):
    pytest.importorskip("gradio")
    from clipforge.outputs import read_config
    from clipforge.ui.inputs import ui_defaults
    from clipforge.ui.live import LiveRun
    from clipforge.ui.session import Studio

    studio = Studio(default_clip=str(tiny_clip_dir), device="cpu", output_dir=tmp_path)
    values = ui_defaults({"width": 32, "height": 32, "steps": 4, "cutn": 2,
                          "clip": studio.default_clip})
    values.update(prompt="a red circle", generator="noise", keep_best=True,
                  generator_options='{"sampler_steps": 2}')
    cfg = studio.config_from_values(values)[0]
    live = LiveRun(cfg, studio)
    previews = []
    for step in live.steps():
        # the preview of a step is the render of the noise the optimizer held at that step
        assert step.image.shape == (1, 3, 32, 32)
        previews.append(step.image)
        if step.i == 2:
            break  # a pause keeps the noise and the optimizer
    noise = live.run.generator.noise.detach().clone()
    live.steer(cfg.prompt, cfg.negative_prompt, cfg.lr)
    for step in live.steps():
        previews.append(step.image)
    assert live.i == 4 and len(previews) == 4
    assert not torch.equal(previews[0], previews[-1])
    assert not torch.equal(live.run.generator.noise, noise)  # the run went on from the pause
    png = live.save(tmp_path / "n.png")
    saved = read_config(png)
    assert saved.generator == "noise" and saved.keep_best
    assert dict(saved.generator_options) == {"sampler_steps": 2}


# ---------------------------------------------------------------------------------------------
# steering: the held-out judge and the CLIP-free checker read what the noise generator made


STEER_CASES = 8  # the first 8 of the vocabulary grid (seed 0): colours and shapes mixed


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 17's bar is not met yet: measured judge 4, checker "
                   "3 of 8 (docs/generators.md); a pass means it is, and this mark must go")
@needs_prior
def test_noise_steering_convinces_the_judge_and_the_checker():
    """Issue 17's bar: on 8 cases of the shapes vocabulary, guided by the bundled `shapes` CLIP
    with its recommended noise settings, the held-out judge and the CLIP-free checker each read
    at least 7 of 8 as asked, and each run takes at most 60 s on 2 cores."""
    from clipforge.evaluate.steering import steer, vocabulary

    outcomes = steer("noise", vocabulary(0)[:STEER_CASES])
    judge = sum(o.judge_ok for o in outcomes)
    checker = sum(o.checker_ok for o in outcomes)
    seconds = max(o.seconds for o in outcomes)
    assert judge >= 7 and checker >= 7 and seconds <= 60, (judge, checker, seconds)


DOC = (Path(__file__).resolve().parent.parent / "docs" / "generators.md").read_text()
DOC_LINES = re.search(r"### Noise optimization.*?```bash\n(.*?)```", DOC, re.S).group(1) \
    .strip().splitlines()


@pytest.mark.slow  # 80 steps through the sampler (about a minute on a busy 2-core machine)
@needs_prior
def test_documented_offline_command_runs(tmp_path, monkeypatch):
    from clipforge.cli import app
    from clipforge.outputs import read_config

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, shlex.split(DOC_LINES[0])[1:])
    assert r.exit_code == 0, r.output
    cfg = read_config(tmp_path / "red-circle.png")
    assert (cfg.generator, cfg.width, cfg.steps) == ("noise", 32, 80)  # the guide's settings


def test_documented_hub_command_fails_offline_with_a_hint(tmp_path, monkeypatch):
    from clipforge.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, shlex.split(DOC_LINES[1])[1:])
    assert r.exit_code in (1, 2), r.output
    assert re.search(r"offline|local", r.stderr, re.I), r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_gpu_gives_the_fp32_gradient_direction(sd_dir):
    """dtype auto runs the models in bfloat16 on CUDA; the noise and its gradient stay float32
    and point where the float32 gradient points."""
    grads = {}
    for dtype in ("auto", "float32"):
        gen = build_generator("noise", 16, 16, options={"model": str(sd_dir), "dtype": dtype,
                                                        "sampler_steps": 2},
                              generator=torch.Generator().manual_seed(0), device="cuda")
        (gen.render() - 0.3).square().mean().backward()
        grads[dtype] = gen.noise.grad.flatten()
    assert gen.noise.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(grads["auto"], grads["float32"], dim=0)
    assert float(cos) > 0.9
