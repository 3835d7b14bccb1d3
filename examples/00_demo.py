"""The offline demo (`make demo`): four shape prompts guided by the bundled `shapes` CLIP.

Each image is written as a PNG that carries its settings, then read by two observers that never
guided it: the bundled `shapes-judge` CLIP (its top-1 among all 32 colour x shape captions) and
a check that uses no CLIP at all (colour and shape from the pixels). The demo says, per image,
whether both saw what the prompt asked. Settings are the ones `--clip shapes` gets by default
(the guide's recommended settings, measured on the whole vocabulary: docs/generators.md).
"""

import argparse
from pathlib import Path

from clipforge import RunConfig
from clipforge.evaluate.steering import Reader
from clipforge.outputs import default_name, save_png
from clipforge.pretrained import BUNDLED
from clipforge.runner import run

PROMPTS = {"a red circle": ("red", "circle"), "a blue square": ("blue", "square"),
           "a green triangle": ("green", "triangle"), "a yellow star": ("yellow", "star")}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", type=Path, default=Path("out/demo"))
parser.add_argument("--generator", default="pixel", choices=sorted(BUNDLED["shapes"].settings))
parser.add_argument("--steps", type=int, help="override the recommended steps")
parser.add_argument("--size", type=int, help="override the recommended size")
args = parser.parse_args()

args.out.mkdir(parents=True, exist_ok=True)
reader = Reader()  # loads the judge and the guide once; runs share its model cache
agreed = 0
for i, (prompt, asked) in enumerate(PROMPTS.items()):
    mine = {"steps": args.steps, "size": args.size}
    cfg = RunConfig.from_settings({"prompt": prompt, "generator": args.generator, "seed": i}, mine)
    result = run(cfg, cache=reader.cache)
    path = save_png(args.out / default_name(cfg, i), result.image, cfg)
    seen = reader.read(result.image)
    both = seen["judge"] == asked and seen["checker"] == asked
    agreed += both
    print(f"{path}  ({result.seconds:.1f} s; the judge sees: {' '.join(seen['judge'])}; "
          f"the checker sees: {' '.join(seen['checker']) or 'no shape'}; "
          f"{'both agree with the prompt' if both else 'NOT what was asked'})")
print(f"{agreed} of {len(PROMPTS)} images: the judge and the checker both saw what was asked")
