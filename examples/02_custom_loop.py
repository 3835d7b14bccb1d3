"""Compose the pieces by hand: generator, CLIP, prompts, cutouts, guide; observe every step."""

import argparse

import torch

from clipforge.generators.pixel import PixelGenerator
from clipforge.guidance.augment import Cutouts
from clipforge.guidance.clip_models import load_embedder
from clipforge.guidance.guide import Guide
from clipforge.guidance.prompts import Prompt
from clipforge.images import to_pil
from clipforge.loop import optimize

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--out", default="custom_loop.png")
args = parser.parse_args()

clip = load_embedder("shapes")
generator = PixelGenerator(96, 96, pyramid=True, generator=torch.Generator().manual_seed(0))
prompts = [
    Prompt(text="a yellow star", weight=1.0),
    Prompt(text="a yellow circle", weight=-0.3, stop=0.5),  # only during the first half
]
guide = Guide(clip, prompts, Cutouts(clip.image_size, cutn=32, cut_pow=1.0),
              tv_weight=0.05, generator=torch.Generator().manual_seed(1))

for step in optimize(generator, guide, args.steps, lr=0.05, warmup_steps=10, schedule="cosine"):
    if step.i % 25 == 0 or step.i == step.total:  # reading a value syncs: only when shown
        parts = ", ".join(f"{k} {float(v):+.3f}" for k, v in step.losses.items())
        print(f"step {step.i}/{step.total}: loss {float(step.loss):.3f} ({parts})")

to_pil(generator.render()).save(args.out)
print(f"wrote {args.out}")
