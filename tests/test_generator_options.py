"""Generator options checked from their declarations before any work (issue 15 item 6,
BAD_INPUTS row 28): wrong types and ranges, NaN, and options that need another setting."""

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from clipforge import registry
from clipforge.cli import app
from clipforge.errors import ConfigError, NonFiniteLossError
from clipforge.guidance.prompts import parse_prompt
from clipforge.loop import optimize

runner = CliRunner()


@pytest.mark.parametrize("name, options, says", [
    ("pixel", {"min_size": 0}, "min_size: 0 is out of range; allowed: >= 1"),
    ("pixel", {"pyramid": "yes"}, "pyramid: expected true or false, got 'yes'"),
    ("fourier", {"decorrelate": "no"}, "decorrelate: expected true or false, got 'no'"),
    ("pixel", {"min_size": True}, "min_size: expected a whole number, got True"),
    ("pixel", {"min_size": 1.5}, "min_size: expected a whole number, got 1.5"),
    ("pixel", {"min_size": "eight"}, "min_size: expected a whole number, got 'eight'"),
    ("pixel", {"init_std": -1}, "init_std: -1 is out of range; allowed: >= 0"),
    ("pixel", {"init_std": float("nan")}, "init_std: must be finite"),
    ("fourier", {"decay": float("inf")}, "decay: must be finite"),
    ("diffusion", {"scheduler": "euler"}, "scheduler: 'euler' is not one of ddim, dpm++"),
    ("diffusion", {"skip_steps": 1.5}, "skip_steps: expected a whole number"),
    ("diffusion", {"normalize_grad": "false"}, "normalize_grad: expected true or false"),
    ("vqgan", {"subfolder": 3}, "subfolder: expected text"),
    ("biggan", {"truncation": 0}, "truncation: 0 is out of range; allowed: > 0 and <= 1"),
    ("biggan", {"top_k": "5"}, "top_k: expected a whole number"),
])
def test_bad_option_values_are_refused_naming_option_and_allowed(name, options, says):
    with pytest.raises(ConfigError, match="generator_options") as e:
        registry.check_generator(name, 64, 64, options, steps=10)
    assert says in str(e.value) and f"generator {name!r}" in str(e.value)


@pytest.mark.parametrize("name, options", [
    ("pixel", {"min_size": 8, "pyramid": False, "init_std": 0}),
    ("fourier", {"decay": 1, "decorrelate": False}),  # an int for a float option is fine
    ("vqgan", {"subfolder": None}), ("vae", {"subfolder": None}),
    ("biggan", {"top_k": None, "truncation": 1}),
    ("diffusion", {"skip_steps": None, "decoder": None, "cutn_schedule": [4, 2]}),
])
def test_good_option_values_pass(name, options):
    registry.check_generator(name, 64, 64, options, steps=10)


def test_skip_steps_needs_an_init_image_and_fewer_steps_checked_up_front():
    with pytest.raises(ConfigError, match="skip_steps: 10 needs an init image"):
        registry.check_generator("diffusion", 32, 32, {"skip_steps": 10}, steps=20)
    with pytest.raises(ConfigError, match="skip_steps: 10 is out of range; allowed: 0 to 9"):
        registry.check_generator("diffusion", 32, 32, {"skip_steps": 10}, init_image=True,
                                 steps=10)
    registry.check_generator("diffusion", 32, 32, {"skip_steps": 10}, init_image=True, steps=20)


def test_declaration_is_read_from_rules_and_signature():
    # the type comes from the default unless declared; None-default options need a type
    cls = registry.generator_class("pixel")
    assert cls.option_rules["min_size"] == {"min": 1, "max": 4096}
    assert registry.generator_options("pixel")["min_size"] == 4


@pytest.mark.parametrize("options", ['{"min_size": 0}', '{"pyramid": "yes"}',
                                     '{"init_std": NaN}', '{"min_size": "eight"}'])
def test_cli_exits_2_before_any_model_loads(options, tmp_path):
    # a CLIP that does not exist: the option error must come first (nothing is loaded)
    r = runner.invoke(app, ["generate", "x", "--clip", str(tmp_path / "no-such-clip"),
                            "--size", "32", "--steps", "1", "-q", "--generator-options",
                            options, "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 2, r.output
    assert "generator_options: generator 'pixel' option" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "a.png").exists()


def test_huge_prompt_weight_is_refused_not_blamed_on_the_learning_rate():
    with pytest.raises(ConfigError, match="weight 1e\\+308 .* out of range; allowed: -10000"):
        parse_prompt("a red circle:1e308")


class _NaNGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.full((1, 3, 8, 8), float("nan")))

    def render(self):
        return torch.sigmoid(self.p)


class _Guide:
    def loss(self, image, t):
        total = (image - 0.5).square().mean()
        return total, {"mse": total}


def test_non_finite_initial_loss_is_not_blamed_on_the_learning_rate():
    with pytest.raises(NonFiniteLossError) as e:
        list(optimize(_NaNGenerator(), _Guide(), 3, lr=0.05))
    assert e.value.step == 1 and "learning rate has not acted" in str(e.value)
    assert "lower the learning rate" not in str(e.value)
