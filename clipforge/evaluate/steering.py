"""The steering benchmark: does guidance make what the prompt asks, by eyes other than the guide's?

Over the whole shapes vocabulary (8 colours x 4 shapes, with or without "on a <colour>
background", in every phrasing of the data set, "a"/"an" as English wants), each case is
rendered by one generator guided by one CLIP, then read three ways:

- the held-out **judge** CLIP (never a guide): its top-1 among the 32 "a <colour> <shape>"
  captions must be the asked colour and shape;
- the CLIP-free **checker** (:mod:`.shapes_check`): colour and shape from the pixels;
- the **guide** itself, the same way as the judge: the gap between the guide's agreement and
  the judge's is the adversarial gap (images that satisfy the guide and nobody else).

Settings are the ones a user gets with ``--clip shapes`` and nothing but prompt and generator:
RunConfig's defaults, then the bundled model's recommended settings, then ``settings``.
Cases are drawn from a seed, never hand-picked: tune on the grid, never on a few prompts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from clipforge.errors import UsageError
from clipforge.training.shapes import COLOUR_NAMES, PHRASINGS, PHRASINGS_BG, SHAPES


@dataclass(frozen=True)
class Case:
    """One prompt of the grid and what it asks for."""

    prompt: str
    colour: str
    shape: str
    background: str | None
    seed: int


@dataclass(frozen=True)
class Outcome:
    """What one rendered case was read as, and how long it took."""

    case: Case
    judge: tuple[str, str]
    guide: tuple[str, str]
    checker: tuple[str, str]
    seconds: float

    @property
    def judge_ok(self) -> bool:
        return self.judge == (self.case.colour, self.case.shape)

    @property
    def checker_ok(self) -> bool:
        return self.checker == (self.case.colour, self.case.shape)

    @property
    def guide_ok(self) -> bool:
        return self.guide == (self.case.colour, self.case.shape)


def _article(text: str) -> str:
    """``a orange`` -> ``an orange``: the article English wants before the next word."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][:1] in "aeiou" else "a"
    return " ".join(words)


def vocabulary(seed: int = 0, repeats: int = 1) -> list[Case]:
    """Every colour x shape of the vocabulary ``repeats`` times, each with a phrasing, a
    background (or none) and a run seed drawn from ``seed``: 32 * repeats cases, in an order
    that mixes colours and shapes (so the first 8 are a fair sample too)."""
    rng = random.Random(seed)
    cases = []
    for rep in range(repeats):
        pairs = [(c, s) for c in COLOUR_NAMES for s in SHAPES]
        rng.shuffle(pairs)
        for colour, shape in pairs:
            if rng.random() < 0.5:
                bg = rng.choice([c for c in COLOUR_NAMES if c != colour])
                text = rng.choice(PHRASINGS_BG).format(c=colour, s=shape, b=bg)
            else:
                bg, text = None, rng.choice(PHRASINGS).format(c=colour, s=shape)
            cases.append(Case(_article(text), colour, shape, bg, rng.randrange(2**31)))
    return cases


class Reader:
    """Reads a shapes image three ways: the held-out judge's top-1, the guide's, the checker's.

    Args:
        cache: a ModelCache (each model loads once).
        judge: the held-out judge; must differ from the guide.
        guide: the guide, read the same way (the adversarial gap is guide minus judge).
    """

    COMBOS = [(c, s) for c in COLOUR_NAMES for s in SHAPES]

    def __init__(self, cache=None, judge: str = "shapes-judge", guide: str = "shapes"):
        from clipforge.guidance.clip_models import ModelCache

        if judge == guide:
            raise UsageError("judge: the judge must not be the guide (it would reward "
                             "adversarial images)")
        self.cache = cache or ModelCache()
        texts = [_article(f"a {c} {s}") for c, s in self.COMBOS]
        self.models = {name: self.cache.get(name) for name in (judge, guide)}
        self.text = {name: m.encode_text(texts) for name, m in self.models.items()}
        self.judge, self.guide = judge, guide

    def _top1(self, name: str, image) -> tuple[str, str]:
        import torch

        m = self.models[name]
        with torch.no_grad():
            scores = m.encode_image(image.to(m.device)) @ self.text[name].T
        return self.COMBOS[int(scores.argmax())]

    def read(self, image) -> dict[str, tuple[str, str]]:
        """``{"judge": (colour, shape), "guide": ..., "checker": ...}`` of one image.

        Shape:
            image: (1, 3, H, W) in [0, 1].
        """
        from clipforge.evaluate.shapes_check import read_shape

        r = read_shape(image)
        return {"judge": self._top1(self.judge, image), "guide": self._top1(self.guide, image),
                "checker": (r.colour, r.shape)}


def steer(generator: str, cases: Sequence[Case], *, clip: str = "shapes",
          judge: str = "shapes-judge", settings: Mapping[str, Any] | None = None,
          cache=None, on_outcome: Callable[[Outcome], None] | None = None,
          save: Callable[[Case, Any, Any], None] | None = None) -> list[Outcome]:
    """Render every case with ``generator`` guided by ``clip`` and read each result three ways.

    Args:
        generator: a registered generator name.
        cases: from :func:`vocabulary`.
        clip: the guide (one spec).
        judge: the held-out judge; must differ from the guide.
        settings: RunConfig fields over the defaults and the guide's recommended settings
            (not ``clip``: a UsageError).
        cache: a ModelCache (models load once).
        on_outcome: called after each case (progress display).
        save: called as ``save(case, image, config)`` with every result (to keep the PNGs).
    """
    from clipforge.config import RunConfig
    from clipforge.runner import run

    if settings and "clip" in settings:  # the guide is read as well as used: one place names it
        raise UsageError(f"steer: name the guide with clip=..., not in settings (got "
                         f"{settings['clip']!r})")
    reader = Reader(cache, judge, clip)
    out = []
    for case in cases:
        cfg = RunConfig.from_settings(settings, {"prompt": case.prompt, "generator": generator,
                                                 "clip": [clip], "seed": case.seed})
        t0 = time.perf_counter()
        image = run(cfg, cache=reader.cache).image
        seconds = time.perf_counter() - t0
        if save is not None:
            save(case, image, cfg)
        seen = reader.read(image)
        o = Outcome(case, seen["judge"], seen["guide"], seen["checker"], seconds)
        out.append(o)
        if on_outcome is not None:
            on_outcome(o)
    return out


@dataclass(frozen=True)
class Summary:
    """Agreement rates of one generator over a grid."""

    generator: str
    n: int
    judge: float
    checker: float
    both: float
    guide: float
    seconds: float
    max_seconds: float


def summarize(generator: str, outcomes: Iterable[Outcome]) -> Summary:
    """Fractions of cases the judge, the checker, both, and the guide read as asked."""
    o = list(outcomes)
    n = max(1, len(o))
    return Summary(generator, len(o), sum(x.judge_ok for x in o) / n,
                   sum(x.checker_ok for x in o) / n,
                   sum(x.judge_ok and x.checker_ok for x in o) / n,
                   sum(x.guide_ok for x in o) / n,
                   sum(x.seconds for x in o) / n, max((x.seconds for x in o), default=0.0))


def table(rows: Sequence[Summary]) -> str:
    """A plain-text table of summaries, one generator a row."""
    head = (f"{'generator':<10} {'cases':>5} {'judge':>6} {'checker':>8} {'both':>6} "
            f"{'guide':>6} {'gap':>6} {'s/image':>8} {'max s':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.generator:<10} {r.n:>5} {r.judge:>6.0%} {r.checker:>8.0%} "
                     f"{r.both:>6.0%} {r.guide:>6.0%} {r.guide - r.judge:>+6.0%} "
                     f"{r.seconds:>8.1f} {r.max_seconds:>6.1f}")
    return "\n".join(lines)


__all__ = ["Case", "Outcome", "Reader", "Summary", "vocabulary", "steer", "summarize", "table"]
