"""Does guidance transfer? Render the shapes vocabulary with every offline generator and read it.

For each generator, every case of :func:`clipforge.evaluate.steering.vocabulary` (32 colour x
shape captions per repeat, backgrounds and phrasings drawn from ``--seed``) is rendered with
``--clip shapes`` (or ``--clip DIR``) and only the prompt and the generator set, then read by
the held-out ``shapes-judge``, by the CLIP-free checker and by the guide itself. Prints one row per
generator: judge, checker and both agreeing with the prompt, the guide's own agreement, the gap
between them (the adversarial gap), and seconds per image.

    python benchmarks/steering.py                          # every offline generator, 32 cases
    python benchmarks/steering.py --generators pixel --cases 8 --verbose
    python benchmarks/steering.py --repeats 2 --json out.json
    python benchmarks/steering.py --judge path/to/another-judge --out grid/   # a second opinion
    python benchmarks/steering.py --clip path/to/a-new-guide --set width=128 ...  # another guide
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# generators with a bundled model to run on, offline
OFFLINE = ("pixel", "fourier", "vae", "vqgan", "diffusion", "noise")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", nargs="+", default=list(OFFLINE))
    ap.add_argument("--seed", type=int, default=0, help="draws backgrounds, phrasings, seeds")
    ap.add_argument("--repeats", type=int, default=1, help="times through the 32 captions")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="a RunConfig field over the defaults, e.g. --set steps=100")
    ap.add_argument("--clip", default="shapes",
                    help="the guide: a bundled name or a saved CLIP folder (a folder gets the "
                         "global defaults, not the bundled guide's recommended settings)")
    ap.add_argument("--judge", default="shapes-judge",
                    help="the held-out judge: a bundled name or a saved CLIP folder (never "
                         "the guide)")
    ap.add_argument("--verbose", action="store_true", help="one line per case")
    ap.add_argument("--json", type=Path, help="write every outcome here")
    ap.add_argument("--out", type=Path, help="save every image here (PNG with its settings)")
    args = ap.parse_args(argv)

    import torch

    from clipforge.evaluate.steering import steer, summarize, table, vocabulary
    from clipforge.guidance.clip_models import ModelCache

    torch.set_num_threads(max(1, torch.get_num_threads()))
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    cases = vocabulary(args.seed, args.repeats)[: args.cases]
    cache = ModelCache()

    def show(o) -> None:
        if args.verbose:
            mark = lambda ok: "ok " if ok else "-- "  # noqa: E731
            print(f"  {mark(o.judge_ok)}{mark(o.checker_ok)}{o.seconds:5.1f}s  "
                  f"{o.case.prompt!r:48} judge {' '.join(o.judge)}, checker "
                  f"{' '.join(o.checker) or 'nothing'}, guide {' '.join(o.guide)}", flush=True)

    rows, dump = [], {}
    for gen in args.generators:
        if args.verbose:
            print(gen, flush=True)
        save = None
        if args.out is not None:
            from clipforge.outputs import save_png, slugify

            (args.out / gen).mkdir(parents=True, exist_ok=True)
            save = lambda case, image, cfg: save_png(  # noqa: E731
                args.out / gen / f"{slugify(case.prompt)}-s{case.seed}.png", image, cfg)
        outcomes = steer(gen, cases, clip=args.clip, judge=args.judge, settings=settings,
                         cache=cache, on_outcome=show, save=save)
        rows.append(summarize(gen, outcomes))
        dump[gen] = [{**asdict(o.case), "judge": o.judge, "checker": o.checker,
                      "guide": o.guide, "seconds": round(o.seconds, 2)} for o in outcomes]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "clip": args.clip,
                                         "judge": args.judge,
                                         "outcomes": dump}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
