"""The prompt syntax (BAD_INPUTS row 4) and scheduling."""

import pytest

from clipforge.config import ConfigError, RunConfig
from clipforge.guidance.prompts import Prompt, escape, parse_image_prompt, parse_prompt, \
    prompts_from_config


def pairs(text, **kw):
    return [(p.text, p.weight) for p in parse_prompt(text, **kw)]


def test_weights_negatives_and_separator():
    assert pairs("a lighthouse:1.5 | fog:-0.5") == [("a lighthouse", 1.5), ("fog", -0.5)]
    assert pairs("a fox") == [("a fox", 1.0)]
    assert pairs("x:.5|y:2e-1 | z:+3") == [("x", 0.5), ("y", 0.2), ("z", 3.0)]


def test_colon_space_is_text_not_weight():
    assert pairs("Steps: 5, Seed: 1") == [("Steps: 5, Seed: 1", 1.0)]
    assert pairs("a photo: sunset") == [("a photo: sunset", 1.0)]


def test_escapes():
    assert pairs(r"at 12\:30") == [("at 12:30", 1.0)]
    assert pairs(r"a \| b:2") == [("a | b", 2.0)]
    assert pairs(r"back\\slash") == [("back\\slash", 1.0)]
    for text in ["12:30", "a | b", "x\\y:3", "Steps: 5, Seed: 1", 'quote " , comma']:
        assert pairs(escape(text)) == [(text, 1.0)]


def test_quotes_commas_newlines_kept():
    assert pairs('say "hi", then\nleave:2') == [('say "hi", then\nleave', 2.0)]


def test_empty_parts_dropped_and_negate():
    assert pairs(" | a || b | ") == [("a", 1.0), ("b", 1.0)]
    assert pairs("blur:0.5", negate=True) == [("blur", -0.5)]


def test_all_zero_weights_is_empty():
    with pytest.raises(ConfigError, match="empty"):
        prompts_from_config(RunConfig(prompt="a:0 | b:0"))


def test_image_prompt_spec():
    p = parse_image_prompt("/tmp/a.png:0.5")
    assert p.image == "/tmp/a.png" and p.weight == 0.5
    assert parse_image_prompt("C:/x.png").image == "C:/x.png"


def test_schedule_window():
    p = Prompt(text="x", weight=2.0, start=0.25, stop=0.5)
    assert [p.weight_at(t) for t in (0.0, 0.25, 0.49, 0.5, 1.0)] == [0, 2.0, 2.0, 0, 0]
    assert Prompt(text="x").weight_at(1.0) == 1.0
    with pytest.raises(ConfigError):
        Prompt(text="x", start=0.6, stop=0.5)
    with pytest.raises(ConfigError):
        Prompt(text="x", image="y")
