"""Start from an image, steer it with a prompt, and stop early with `break`."""

import argparse

import torch

from clipforge import RunConfig
from clipforge.runner import Run
from clipforge.outputs import save_png

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--out", default="init_image.png")
args = parser.parse_args()

# an init image: a plain blue canvas, written with its own settings-free PNG
start = torch.zeros(1, 3, 96, 96)
start[:, 2] = 0.8
save_png("start.png", start)

cfg = RunConfig(prompt="a red square", init_image="start.png", init_weight=0.5,
                clip=("shapes",), generator="pixel", width=96, height=96,
                steps=args.steps, seed=3)
run = Run(cfg)  # models loaded and inputs checked here, before the first step
for step in run:
    if step.i >= args.steps // 2:  # stop half-way: cleanup runs in the loop's `finally`
        break
save_png(args.out, run.image(), run.config)
print(f"stopped after {run.done} of {cfg.steps} steps; wrote {args.out}")
