"""RunConfig validation: BAD_INPUTS rows 1-8 at the API layer."""

import json
import math

import pytest

from clipforge.config import MAX_SIDE, MAX_STEPS, ConfigError, RunConfig, merge, parse_size


def cfg(**kw):
    kw.setdefault("prompt", "a red circle")
    return RunConfig(**kw)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt_rejected(prompt):  # row 1
    with pytest.raises(ConfigError, match="prompt is empty") as e:
        cfg(prompt=prompt)
    assert e.value.field == "prompt"


def test_image_prompt_alone_is_enough():
    assert cfg(prompt="", image_prompts=("x.png",)).image_prompts == ("x.png",)


def test_long_prompt_accepted_with_warning_and_capped_in_metadata():  # row 2
    long = "a red circle " * 8000  # ~100 kB
    with pytest.warns(UserWarning, match="77"):
        c = cfg(prompt=long)
    data = json.loads(c.to_json(cap_prompts=True))["config"]
    assert len(data["prompt"]) == 8192 and long.startswith(data["prompt"])


def test_absurd_prompt_rejected():
    with pytest.raises(ConfigError, match="maximum"):
        cfg(prompt="x" * 1_000_001)


@pytest.mark.parametrize("bad, why", [("a\x00b", "NUL"), ("a\ud800b", "surrogate")])
def test_nul_and_lone_surrogate_rejected(bad, why):  # row 3
    with pytest.raises(ConfigError, match=why):
        cfg(prompt=bad)


@pytest.mark.parametrize("text", ["🦊 fox", "שלום עולם", "e\u0301\u0301", "zero\u200bwidth",
                                  "line1\r\nline2"])
def test_unicode_prompts_round_trip_json(text):  # row 3, first group
    c = cfg(prompt=text)
    assert RunConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize("w, h", [(0, 64), (-8, 64), (1, 100000), (16384, 16384), (64, 5000)])
def test_bad_sizes_rejected_with_range(w, h):  # row 5
    with pytest.raises(ConfigError, match=rf"{MAX_SIDE}|8"):
        cfg(width=w, height=h)


def test_non_integer_size_rejected():
    with pytest.raises(ConfigError, match="whole number"):
        RunConfig.from_dict({"prompt": "x", "width": "64.5"})
    with pytest.raises(ConfigError, match="whole number"):
        cfg(width=64.5)
    with pytest.raises(ConfigError, match="size"):
        parse_size("64x")
    assert parse_size("320x256") == (320, 256) and parse_size("128") == (128, 128)


@pytest.mark.parametrize("steps", [-1, MAX_STEPS + 1, 10**9])
def test_bad_steps_rejected(steps):  # row 6
    with pytest.raises(ConfigError, match=f"{MAX_STEPS}"):
        cfg(steps=steps)


def test_steps_string_and_float_rejected():
    with pytest.raises(ConfigError, match="whole number"):
        RunConfig.from_dict({"prompt": "x", "steps": "3.5"})
    with pytest.raises(ConfigError, match="whole number"):
        RunConfig.from_dict({"prompt": "x", "steps": 3.5})
    assert cfg(steps=0).steps == 0  # documented: 0 returns the initial image


@pytest.mark.parametrize("lr", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_bad_lr_rejected(lr):  # row 7
    with pytest.raises(ConfigError) as e:
        cfg(lr=lr)
    assert e.value.field == "lr"


def test_huge_lr_accepted_up_front():
    assert cfg(lr=1e6).lr == 1e6  # it diverges at run time: see test_loop


@pytest.mark.parametrize("seed", [-2, 2**64])
def test_bad_seed_rejected(seed):  # row 8
    with pytest.raises(ConfigError, match="seed"):
        cfg(seed=seed)
    with pytest.raises(ConfigError, match="whole number"):
        RunConfig.from_dict({"prompt": "x", "seed": "abc"})


def test_random_seed_is_resolved_and_reported():
    from clipforge.runner import resolve_seed

    c = resolve_seed(cfg(seed=-1))
    assert 0 <= c.seed < 2**63


def test_unknown_key_and_bad_choice():
    with pytest.raises(ConfigError, match="unknown setting"):
        RunConfig.from_dict({"prompt": "x", "stepz": 3})
    with pytest.raises(ConfigError, match="adam"):
        cfg(optimizer="sgd")
    with pytest.raises(ConfigError, match="device"):
        cfg(device="tpu")


def test_newer_version_refused():
    with pytest.raises(ConfigError, match="version"):
        RunConfig.from_dict({"clipforge_config": 99, "config": {"prompt": "x"}})


def test_replace_validates_again():
    with pytest.raises(ConfigError):
        cfg().replace(cutn=0)


def test_from_settings_puts_the_guides_recommended_settings_under_what_was_given():
    from clipforge.pretrained import recommended

    rec = recommended(["shapes"], "fourier")
    assert rec, "the bundled guide recommends settings for fourier"
    c = RunConfig.from_settings({"prompt": "x", "generator": "fourier"})
    assert all(getattr(c, k) == v for k, v in rec.items())
    mine = RunConfig.from_settings({"prompt": "x", "generator": "fourier", "lr": 0.3})
    assert mine.lr == 0.3  # what the user gave wins
    other = RunConfig.from_settings({"prompt": "x", "generator": "fourier",
                                     "clip": ["ViT-B-32:random"]})
    assert other.lr == RunConfig(prompt="x").lr  # a real CLIP keeps the global defaults
    saved = RunConfig(prompt="x", generator="fourier", lr=0.07)
    assert RunConfig.from_settings(saved) == saved  # a whole config repeats exactly


def test_generator_options_are_layered_option_by_option_but_a_whole_config_fixes_them():
    # one option of the user's keeps the rest of the recommendation (the bundled model)
    c = RunConfig.from_settings({"prompt": "x", "generator": "vae",
                                 "generator_options": {"init_std": 0.5}})
    assert dict(c.generator_options) == {"model": "shapes-vae", "init_std": 0.5}
    mine = RunConfig.from_settings({"prompt": "x", "generator": "vae",
                                    "generator_options": '{"model": "madebyollin/taesd"}'})
    assert dict(mine.generator_options) == {"model": "madebyollin/taesd"}  # the user's wins
    # partial layers (a --config file, then flags) merge the same way, later ones winning
    assert merge({"generator_options": {"decay": 1.5, "init_std": 0.1}},
                 {"generator_options": {"decay": 2.5}})["generator_options"] == \
        {"decay": 1.5, "init_std": 0.1} | {"decay": 2.5}
    # a whole config (a RunConfig, the wrapper a PNG carries) is repeated as it was, even
    # where the recommendation would add an option today
    saved = RunConfig(prompt="x", generator="fourier", generator_options={"init_std": 0.02})
    assert "decay" in RunConfig.from_settings({"prompt": "x", "generator": "fourier"}
                                              ).generator_options
    assert RunConfig.from_settings(saved) == saved
    assert RunConfig.from_settings(json.loads(saved.to_json())) == saved
    # ... and flags over a whole config add to its options
    more = RunConfig.from_settings(json.loads(saved.to_json()),
                                   {"generator_options": {"decay": 1.25}})
    assert dict(more.generator_options) == {"init_std": 0.02, "decay": 1.25}


def test_a_models_settings_for_every_generator_sit_under_the_generators_own():
    from clipforge.pretrained import recommended

    for gen in ("pixel", "fourier", "vae", "diffusion"):   # "*" of the bundled guide
        assert recommended(["shapes"], gen)["precision"] == "fp32"
    assert RunConfig.from_settings({"prompt": "x", "generator": "vae"}).precision == "fp32"
    assert RunConfig.from_settings({"prompt": "x", "precision": "bf16"}).precision == "bf16"
    assert "precision" not in recommended(["ViT-B-32:random"], "pixel")
