"""Quickstart: one RunConfig, one call, a PNG that carries its own settings."""

import argparse

from clipforge import RunConfig, read_config, run, save_png

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--out", default="quickstart.png")
args = parser.parse_args()

cfg = RunConfig(
    prompt="a red circle:1.5 | a blue background:0.5",  # weights after a colon
    negative_prompt="a green square",                   # steer away from this
    clip=("shapes",),                                   # the bundled offline CLIP
    generator="fourier",
    width=96, height=96, steps=args.steps, seed=1,
)
losses = []
result = run(cfg, callbacks=[lambda step: losses.append(step.loss)])
save_png(args.out, result.image, result.config)

print(f"loss {float(losses[0]):.3f} -> {float(losses[-1]):.3f} in {result.seconds:.1f} s")
assert read_config(args.out) == result.config  # the PNG repeats the run
print(f"wrote {args.out}")
