"""The smaller bad inputs of issue 15 item 9 (BAD_INPUTS row 31 and friends): templates, text
checks shared by score and generate, invisible prompts, prompts empty by syntax in a plan, the
seed limit, sequences for RunConfig, special files."""

from __future__ import annotations

import collections
import os

import pytest
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.config import RunConfig, load_settings
from clipforge.errors import ConfigError, ImageReadError
from clipforge.images import load_image
from clipforge.outputs import read_config
from clipforge.training.zeroshot import check_template

ZERO_WIDTH = "\u200b\u200c\u200d\ufeff"


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("template", ["{} {}", "no slot", "a {0}", "a {name}", "a { photo"])
def test_template_needs_exactly_one_slot(template):
    with pytest.raises(ConfigError, match="template"):
        check_template(template)


def test_classify_with_two_slots_exits_2(tmp_path, tiny_clip_dir):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = _cli("classify", tmp_path / "a.png", "--labels", "a,b", "--template", "{} {}",
             "--clip", tiny_clip_dir)
    assert r.exit_code == 2 and "exactly one {}" in r.stderr and "Traceback" not in r.output
    check_template("a photo of a {} {{braces}}")  # literal braces are fine


def test_score_rejects_a_lone_surrogate_like_generate(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = _cli("score", tmp_path / "a.png", "--prompt", "a \udcff")
    assert r.exit_code == 2 and "lone surrogate" in r.stderr, r.output
    r = _cli("score", tmp_path / "a.png", "--prompt", ZERO_WIDTH)
    assert r.exit_code == 2 and "prompt is empty" in r.stderr, r.output


def test_prompt_of_only_zero_width_characters_is_empty():
    with pytest.raises(ConfigError, match="prompt is empty"):
        RunConfig(prompt=ZERO_WIDTH + " ")
    from clipforge.guidance.prompts import parse_prompt

    assert [p.text for p in parse_prompt(f"a red circle | {ZERO_WIDTH}")] == ["a red circle"]
    RunConfig(prompt="a\u200bb")  # visible text with a zero-width joiner inside is a prompt


def test_plan_counts_prompts_empty_by_syntax_as_invalid(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a red circle\n|\n:2\nx:0\n" + ZERO_WIDTH + "\n")
    r = _cli("batch", lst, "--out", tmp_path / "out", "--plan", "--steps", "2")
    assert r.exit_code == 0, r.output
    assert "plan: 1 to render, 0 done, 0 failed earlier, 4 invalid" in r.stderr
    assert "invalid line 2: prompt: prompt is empty" in r.stdout


def test_seed_limit_is_printed_exactly():
    with pytest.raises(ConfigError) as e:
        RunConfig(prompt="x", seed=2**64)
    assert "9223372036854775807" in str(e.value) and "e+18" not in str(e.value)


def test_runconfig_takes_any_sequence_of_names():
    for clip in (["shapes"], ("shapes",), collections.UserList(["shapes"])):
        assert RunConfig(prompt="x", clip=clip).clip == ("shapes",)
    assert RunConfig(prompt="x", image_prompts=["a.png"]).image_prompts == ("a.png",)


@pytest.mark.parametrize("special", ["/dev/zero", "FIFO"])
def test_special_files_are_not_called_empty(special, tmp_path):
    if special == "FIFO":
        special = tmp_path / "fifo.png"
        os.mkfifo(special)
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(special, field="init_image")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_config(special)  # --from: would block on a FIFO
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(special if str(special).endswith(".png") else "/dev/zero")
    r = _cli("generate", "x", "--init-image", special, "--size", "16", "--steps", "1", "-q",
             "--out", tmp_path / "a.png")
    assert r.exit_code == 2 and "not a regular file" in r.stderr, r.output
