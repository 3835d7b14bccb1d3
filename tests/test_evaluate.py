"""Judging images: CLIP score, zero-shot R-precision, and the same-model warning."""

import warnings

import pytest
import torch

from clipforge.evaluate import SameModelWarning, clip_score, evaluate, r_precision
from clipforge.training.shapes import COLOUR_NAMES, SHAPES, ShapesDataset, caption


@pytest.fixture(scope="module")
def judge():
    from clipforge.guidance.clip_models import load_embedder

    return load_embedder("shapes-judge")


@pytest.fixture(scope="module")
def val():
    return ShapesDataset(image_size=64).split("val", 64)


def _prompts(b):
    return [caption(SHAPES[s], COLOUR_NAMES[c]) for s, c in zip(b.shape.tolist(), b.colour.tolist())]


def test_clip_score_prefers_the_true_prompt(judge, val):
    right = clip_score(val.images, _prompts(val), judge)
    wrong = clip_score(val.images, [p.replace("circle", "square") if "circle" in p else
                                    p.replace(p.split()[1], "circle") for p in _prompts(val)], judge)
    assert right.shape == (64,) and 0 <= right.min() and right.max() <= 100
    assert (right > wrong).float().mean() > 0.85


def test_r_precision_and_evaluate(judge, val):
    everything = [caption(s, c) for s in SHAPES for c in COLOUR_NAMES]
    rp = r_precision(val.images, _prompts(val), judge, candidates=everything)
    assert rp >= 0.9  # chance is 1/32; the bundled judge knows colour and shape (>99% zero-shot)
    assert r_precision(val.images, _prompts(val), judge, candidates=everything, k=5) >= rp
    ev = evaluate(val.images[:4], "a red circle", judge)
    assert ev.r_precision is None and len(ev.clip_scores) == 4  # nothing to rank against
    ev = evaluate(val.images, _prompts(val), judge)
    assert ev.r_precision is not None and ev.clip_score == pytest.approx(
        sum(ev.clip_scores) / 64, rel=1e-5)


def test_judging_with_the_guide_warns(judge, val):
    with pytest.warns(SameModelWarning, match="shapes-judge"):
        clip_score(val.images[:2], "a red circle", "shapes-judge", guide="shapes,shapes-judge@0.5")
    with pytest.warns(SameModelWarning):
        clip_score(val.images[:2], "a red circle", judge, guide=[judge])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SameModelWarning)
        clip_score(val.images[:2], "a red circle", judge, guide="shapes")


def test_bad_inputs(judge, val):
    with pytest.raises(ValueError, match="prompts: 2 prompts for 3 images"):
        clip_score(val.images[:3], ["a", "b"], judge)
    with pytest.raises(ValueError, match="prompt is empty"):
        clip_score(val.images[:1], "  ", judge)
    with pytest.raises(ValueError, match="images"):
        clip_score(torch.zeros(3, 64, 64), "a red circle", judge)
    with pytest.raises(ValueError, match="at least 2"):
        r_precision(val.images[:2], "a red circle", judge)
    with pytest.raises(ValueError, match="k:"):
        r_precision(val.images[:2], ["a red circle", "a blue star"], judge, k=2)
    with pytest.raises(ValueError, match="unknown model"):
        clip_score(val.images[:1], "a red circle", "no-such-model")
