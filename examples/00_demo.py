"""The offline demo (`make demo`): a few shape prompts guided by the bundled `shapes` CLIP.

Each image is written as a PNG that carries its settings; the bundled `shapes-judge` (never
used for guidance) then says what it sees in each, so the demo shows whether guidance worked.
Each generator runs with the settings measured to convince the judge (``pretrained.recommended``).
"""

import argparse
from pathlib import Path

from clipforge import RunConfig
from clipforge.pretrained import BUNDLED, recommended
from clipforge.guidance.clip_models import ModelCache
from clipforge.runner import run
from clipforge.outputs import default_name, save_png

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", type=Path, default=Path("out/demo"))
parser.add_argument("--steps", type=int, default=150)
parser.add_argument("--size", type=int, default=128)
parser.add_argument("--generator", default="fourier", choices=sorted(BUNDLED['shapes'].settings))
args = parser.parse_args()

args.out.mkdir(parents=True, exist_ok=True)
cache = ModelCache()  # the CLIP model is loaded once for all prompts
judge = cache.get("shapes-judge")
captions = judge.encode_text(PROMPTS)
for i, prompt in enumerate(PROMPTS):
    cfg = RunConfig(prompt=prompt, clip=("shapes",), generator=args.generator,
                    width=args.size, height=args.size, steps=args.steps, seed=i,
                    **recommended(["shapes"], args.generator))
    result = run(cfg, cache=cache)
    path = save_png(args.out / default_name(cfg, i), result.image, cfg)
    seen = PROMPTS[int((judge.encode_image(result.image) @ captions.T).argmax())]
    print(f"{path}  ({result.seconds:.1f} s; the judge sees: {seen})")
