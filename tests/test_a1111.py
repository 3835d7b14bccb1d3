"""A1111 ``parameters``: real readers (sd-parsers, sd-prompt-reader) read our PNGs back, the text
round-trips for any prompt (issue 15 item 8), and ``--from`` takes a PNG that A1111 wrote."""

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from clipforge.config import RunConfig
from clipforge.outputs import DIFFUSION_DEFAULTS, a1111_parameters, save_png
from clipforge.pngtext import (a1111_settings, format_parameters, parse_parameters,
                               png_settings, read_png_text)

NASTY_NEGATIVE = "neg one\nNegative prompt: fake\nSteps: 99"  # issue 15 item 8, as reported
A1111_TEXT = ("a red circle, masterpiece\nNegative prompt: a blue square\nSteps: 3, Sampler: "
              "Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 40x32, "
              "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def test_the_reported_negative_prompt_round_trips():
    cfg = RunConfig(prompt="a red circle", negative_prompt=NASTY_NEGATIVE)
    got = parse_parameters(a1111_parameters(cfg))
    assert (got["prompt"], got["negative_prompt"]) == ("a red circle", NASTY_NEGATIVE)
    assert got["Steps"] == "200"  # the fields of the run, not the fake ones in the text


TEXT = st.text(max_size=60) | st.text(alphabet="\n\r:,\" \\Negativ prompt:Steps9", max_size=60)


@settings(max_examples=400, deadline=None)
@given(prompt=TEXT, negative=TEXT)
def test_parse_of_format_is_identity_for_any_text(prompt, negative):
    fields = {"Steps": "5", "Seed": "7", "Model": "ViT-B-32:laion2b, shapes"}
    got = parse_parameters(format_parameters(prompt, negative, fields))
    assert (got.pop("prompt"), got.pop("negative_prompt")) == (prompt, negative)
    assert got == fields


def test_plain_prompts_stay_plain():
    text = format_parameters("a fox", "blurry", {"Steps": "5"})
    assert text == "a fox\nNegative prompt: blurry\nSteps: 5"


@pytest.mark.parametrize("negative", ["", "a blue square", NASTY_NEGATIVE])
def test_round_trip_through_a_png_file(tmp_path, negative):
    cfg = RunConfig(prompt="a red\ncircle", negative_prompt=negative, steps=3)
    path = save_png(tmp_path / "x.png", torch.rand(1, 3, 8, 8), cfg)
    got = parse_parameters(read_png_text(path)["parameters"])
    assert (got["prompt"], got["negative_prompt"]) == (cfg.prompt, negative)


def _cfgs():
    base = RunConfig(prompt="a red circle", negative_prompt="a blue square", width=48, height=32,
                     steps=7, seed=1234)
    return {"optimizer": base.replace(optimizer="adamw", schedule="cosine"),
            "diffusion": base.replace(generator="diffusion", generator_options={
                "scheduler": "dpm++", "cfg_scale": 5.0})}


@pytest.mark.parametrize("kind", ["optimizer", "diffusion"])
def test_sd_parsers_reads_our_png(tmp_path, kind):
    from sd_parsers import ParserManager

    path = save_png(tmp_path / "x.png", torch.rand(1, 3, 32, 48), _cfgs()[kind])
    info = ParserManager().parse(path)
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    assert [p.value for p in sampler.prompts] == ["a red circle"]
    assert [p.value for p in sampler.negative_prompts] == ["a blue square"]
    assert sampler.parameters["seed"] == "1234" and sampler.parameters["steps"] == "7"
    assert info.metadata["Size"] == "48x32"
    if kind == "optimizer":  # the sampler is the optimizer and its schedule; the model the CLIP
        assert sampler.name == "adamw" and sampler.parameters["scheduler"] == "cosine"
        assert sampler.model.name == "shapes" and "cfg_scale" not in sampler.parameters
    else:  # the scheduler, CFG scale and diffusion model; no learning rate
        assert sampler.name == "dpm++" and sampler.parameters["cfg_scale"] == "5"
        assert sampler.model.name == "shapes-ddpm" and info.metadata["CLIP model"] == "shapes"
        assert "Learning rate" not in info.metadata


@pytest.mark.parametrize("kind", ["optimizer", "diffusion"])
def test_sd_prompt_reader_reads_our_png(tmp_path, kind):
    from sd_prompt_reader.image_data_reader import ImageDataReader

    path = save_png(tmp_path / "x.png", torch.rand(1, 3, 32, 48), _cfgs()[kind])
    r = ImageDataReader(str(path))
    assert r.tool == "A1111 webUI"
    assert (r.positive, r.negative) == ("a red circle", "a blue square")
    p = r.parameter
    assert (p["seed"], p["steps"], p["size"]) == ("1234", "7", "48x32")
    if kind == "optimizer":
        assert (p["sampler"], p["model"], p["cfg"]) == ("adamw", "shapes", None)
    else:
        assert (p["sampler"], p["model"], p["cfg"]) == ("dpm++", "shapes-ddpm", "5")


def test_diffusion_defaults_match_the_sampler():
    from clipforge.registry import generator_options

    opts = generator_options("diffusion")
    assert {k: opts[k] for k in DIFFUSION_DEFAULTS} == DIFFUSION_DEFAULTS


def _a1111_png(path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)  # tEXt, as A1111 writes it
    Image.new("RGB", (40, 32), (200, 30, 30)).save(path, pnginfo=info)
    return path


def test_a1111_settings_map_what_they_can(tmp_path):
    settings, ignored = png_settings(_a1111_png(tmp_path / "a.png"))
    assert settings == {"prompt": "a red circle, masterpiece", "negative_prompt":
                        "a blue square", "steps": "3", "seed": "1234", "size": "40x32"}
    assert ignored == ["Sampler", "Schedule type", "CFG scale", "Model hash", "Model", "Version"]
    cfg = RunConfig.from_png(tmp_path / "a.png")
    assert (cfg.prompt, cfg.steps, cfg.seed, cfg.size) == ("a red circle, masterpiece", 3, 1234,
                                                           (40, 32))
    assert a1111_settings("just a prompt\nSteps: 2")[0]["steps"] == "2"


def test_generate_from_an_a1111_png(tmp_path):
    src = _a1111_png(tmp_path / "a1111.png")
    r = subprocess.run([sys.executable, "-m", "clipforge", "generate", "--from", str(src),
                        "--steps", "2", "--cutn", "2", "--clip", "shapes",  # not -q: notes
                        "--out", str(tmp_path / "out.png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ignored: Sampler, Schedule type, CFG scale, Model hash, Model, Version" in r.stderr
    saved = json.loads(read_png_text(tmp_path / "out.png")["clipforge"])["config"]
    assert (saved["prompt"], saved["negative_prompt"], saved["seed"], saved["steps"],
            saved["width"], saved["height"]) == ("a red circle, masterpiece", "a blue square",
                                                 1234, 2, 40, 32)
