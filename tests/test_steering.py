"""Guidance really steers: images guided by the bundled `shapes` CLIP convince the independent
`shapes-judge` and a colour check that uses no CLIP at all (issue 3's acceptance).

Slow (about 2 minutes per generator on one CPU thread): 4 prompts x 150 steps at 128 px.
"""

import pytest
import torch

from clipforge import RunConfig
from clipforge.pretrained import BUNDLED, recommended
from clipforge.guidance.clip_models import ModelCache
from clipforge.runner import run

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "star"]
PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
HUES = torch.tensor([0.0, 1 / 3, 2 / 3, 1 / 6])  # red, green, blue, yellow


def colour_shares(image: torch.Tensor) -> torch.Tensor:
    """Share of saturated pixels nearest in hue to each of COLOURS (no CLIP involved).

    Shape:
        (1, 3, H, W) in [0, 1] -> (4,)
    """
    r, g, b = image[0]
    mx, mn = image[0].max(0).values, image[0].min(0).values
    d = (mx - mn).clamp(min=1e-6)
    hue = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2,
                                                            (r - g) / d + 4)) / 6
    dist = (hue[None] - HUES[:, None, None]).abs()
    nearest = torch.minimum(dist, 1 - dist).argmin(0)
    saturated = ((mx - mn) / mx.clamp(min=1e-6) > 0.3) & (mx > 0.2)
    return torch.stack([((nearest == k) & saturated).float().mean() for k in range(4)])


def test_colour_shares_closed_form():
    img = torch.zeros(1, 3, 2, 2)
    img[0, 0, 0] = 1.0            # top row red
    img[0, :2, 1, 0] = 1.0        # one yellow pixel
    assert colour_shares(img).tolist() == [0.5, 0.0, 0.0, 0.25]


# Each generator runs with clipforge.pretrained.recommended, measured with this setup over
# seeds 0-15 (docs/generators.md). Fourier's settings reach 3 of 4 on three of the four sets of
# 4 seeds, not all, so this test is not a formality for it.


@pytest.mark.slow  # the generators whose recommended settings leave the size free (noise's
# prior makes 32 px only; tests/test_noise.py steers it on the vocabulary grid)
@pytest.mark.parametrize("generator", [g for g, s in BUNDLED["shapes"].settings.items()
                                       if "width" not in s])
def test_guided_images_convince_the_judge_and_the_colour_check(generator):
    cache = ModelCache()
    judge = cache.get("shapes-judge")
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    text = judge.encode_text(captions)
    agreed, shares = 0, []
    for seed, prompt in enumerate(PROMPTS):
        cfg = RunConfig(prompt=prompt, clip=("shapes",), generator=generator, width=128,
                        height=128, steps=150, cutn=32, seed=seed, **recommended(["shapes"], generator))
        image = run(cfg, cache=cache).image
        with torch.no_grad():
            seen = captions[int((judge.encode_image(image) @ text.T).argmax())]
        agreed += seen == prompt
        shares.append(colour_shares(image))
    shares = torch.stack(shares)  # (prompt, colour)
    colour_ok = sum(int(shares[:, COLOURS.index(p.split()[1])].argmax()) == i
                    for i, p in enumerate(PROMPTS))
    assert agreed >= 3 and colour_ok >= 3, (agreed, colour_ok, shares)
