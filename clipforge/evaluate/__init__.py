"""Judging generated images: CLIP scores under a held-out judge, and a reading that uses no CLIP.

- :mod:`.judge`: CLIP score and zero-shot R-precision under a judge model that did not guide;
- :mod:`.shapes_check`: colour and shape of a shapes image read from its pixels alone;
- :mod:`.steering`: the steering benchmark over the whole shapes vocabulary (per generator:
  judge agreement, checker agreement, the guide's own agreement, seconds per image).
"""

from clipforge.evaluate.judge import (DEFAULT_JUDGE, Evaluation, SameModelWarning, check_judge,
                                      clip_score, evaluate, load_judge, r_precision)

__all__ = ["DEFAULT_JUDGE", "Evaluation", "SameModelWarning", "check_judge", "clip_score",
           "evaluate", "load_judge", "r_precision"]
