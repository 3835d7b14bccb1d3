"""Guidance really steers: the regression test of the steering benchmark (issue 12).

Each generator with a bundled model, with only the prompt and the generator set (``--clip
shapes`` and the bundled guide's recommended settings), renders the first cases of the shapes
vocabulary grid (:func:`clipforge.evaluate.steering.vocabulary`: colours, shapes, phrasings and
backgrounds drawn from seed 0, never picked); the held-out ``shapes-judge`` and the CLIP-free
checker read them. The floors sit below what ``python benchmarks/steering.py --generators G
--cases 8`` measured with the same settings (docs/generators.md), by a margin for the thread
count and the torch build, so a change that makes guidance transfer worse fails here.

Slow: 8 runs per generator (150 steps at 128 px; the latent ones at 32 px; diffusion 50
sampler steps at 32 px), 2-25 s each on one busy CPU core.
"""

import pytest

from clipforge.evaluate.steering import steer, vocabulary

CASES = 8
# generator -> (judge, checker) of the first 8 cases, as measured; the test holds them less the
# margin (the checker read 1 of vae's 8, so for vae only the judge's floor bites). The pixel
# pyramid without its recommended level_decay measured (4, 0), and vae and vqgan at 128 px
# instead of their recommended 32 px (4, 0) and (4, 2): the pixel and vqgan ones fail here.
MEASURED = {"pixel": (6, 3), "fourier": (6, 2), "vae": (5, 1), "vqgan": (6, 4),
            "diffusion": (3, 2)}
MARGIN = {"judge": 2, "checker": 1}


@pytest.mark.slow
@pytest.mark.parametrize("generator", sorted(MEASURED))
def test_recommended_settings_keep_their_measured_agreement(generator):
    outcomes = steer(generator, vocabulary(0)[:CASES])
    judge = sum(o.judge_ok for o in outcomes)
    checker = sum(o.checker_ok for o in outcomes)
    want_judge, want_checker = MEASURED[generator]
    assert judge >= want_judge - MARGIN["judge"], (judge, checker, outcomes)
    assert checker >= want_checker - MARGIN["checker"], (judge, checker, outcomes)
