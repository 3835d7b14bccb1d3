"""Seconds per optimization step: clipforge's loop against the classic VQGAN+CLIP notebook loop.

Both loops optimize the same kind of generator (``fourier``, same size and initial spectrum)
toward one text prompt through the SAME open_clip model object, with the same number of
cutouts, alternating rounds (reference, then each variant of ours, again and again) in one
process so that a change of machine load hits all alike. Warm-up steps are excluded (a compiled
variant compiles there; its first-step seconds are printed). The median seconds per step of
each are printed, then the ratio reference/ours of each variant, the library's defaults last.

OURS is :func:`clipforge.loop.optimize` with :class:`clipforge.guidance.guide.Guide` and
:class:`clipforge.guidance.augment.Cutouts` at clipforge's default settings (one batched
``grid_sample`` for all cutouts, no host sync per step), in each precision of ``--precision``
(``auto`` resolves as a run would: bf16 where the hardware has bf16 matrix units) and each
compile setting of ``--compile``. For every bf16 variant the cosine between its image gradient
and fp32's (same image, same cutouts) is printed: bf16 must not change where the image goes.

REFERENCE is the loop popularised by Katherine Crowson's VQGAN+CLIP notebook (2021) and its
command-line descendant (nerdyrodent/VQGAN-CLIP, ``generate.py``, default augments
``Af Pe Ji Er``), in fp32 as they run it:

- ``MakeCutouts``: for each cutout, one at a time: a random size
  ``int(rand ** cut_pow * (max_size - min_size) + min_size)`` and offset, a slice, and
  ``(adaptive_avg_pool2d + adaptive_max_pool2d) / 2`` to the CLIP input size; ``torch.cat``;
- kornia's own augmentation modules, as generate.py builds them: ``RandomAffine`` (15 degrees,
  translate 0.1, shear 5, p 0.7, zero padding), ``RandomPerspective`` (0.7, p 0.7),
  ``ColorJitter`` (hue 0.1, saturation 0.1, p 0.7) and ``RandomErasing`` (scale 0.1-0.4,
  ratio 0.3-3.3, same on the batch, p 0.7); kornia is installed for the benchmark only (the
  ``bench`` extra), clipforge itself never imports it;
- noise ``uniform(0, 0.1) * randn`` per cutout; CLIP normalize; ``encode_image``;
- the notebook's spherical distance loss; Adam; and ``loss.item()`` every step (the notebook
  reads the loss back for its progress display).

Randomness: clipforge draws from explicit ``torch.Generator`` objects; kornia draws from the
global RNG, which is seeded once with ``--seed``.

Usage::

    python benchmarks/step_speed.py          # ViT-B-32 (random init), 256 px, 32 cutouts
    python benchmarks/step_speed.py --precision fp32,bf16 --compile off,on --json
    python benchmarks/step_speed.py --clip PATH --size 32 --cutn 4 --steps 2 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROMPT = "a watercolor painting of a lighthouse in a storm"


# ---------------------------------------------------------------------------------------------
# the reference loop (VQGAN+CLIP notebook style)


class MakeCutouts(nn.Module):
    """The VQGAN+CLIP notebook's cutouts: random square crops, pooled one at a time, augmented.

    Args:
        cut_size: CLIP input side.
        cutn: cutouts per call.
        cut_pow: crop size law exponent.
        noise_fac: largest per-cutout noise standard deviation.

    Shape:
        (1, 3, H, W) in [0, 1] -> (cutn, 3, cut_size, cut_size).
    """

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, noise_fac: float = 0.1):
        super().__init__()
        import kornia.augmentation as K  # the classic loop's own augmentation library

        self.cut_size, self.cutn, self.cut_pow, self.noise_fac = cut_size, cutn, cut_pow, noise_fac
        # nerdyrodent/VQGAN-CLIP generate.py's default augments, "Af Pe Ji Er", as it builds them
        self.augs = nn.Sequential(
            K.RandomAffine(degrees=15, translate=(0.1, 0.1), shear=5, p=0.7, padding_mode="zeros"),
            K.RandomPerspective(distortion_scale=0.7, p=0.7),
            K.ColorJitter(hue=0.1, saturation=0.1, p=0.7),
            K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True, p=0.7),
        )
        self.av_pool = nn.AdaptiveAvgPool2d((cut_size, cut_size))
        self.max_pool = nn.AdaptiveMaxPool2d((cut_size, cut_size))

    def forward(self, image: Tensor) -> Tensor:
        side_y, side_x = image.shape[2:4]
        max_size = min(side_x, side_y)
        min_size = min(side_x, side_y, self.cut_size)
        cutouts = []
        for _ in range(self.cutn):
            size = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            offset_x = torch.randint(0, side_x - size + 1, ())
            offset_y = torch.randint(0, side_y - size + 1, ())
            cutout = image[:, :, offset_y:offset_y + size, offset_x:offset_x + size]
            cutouts.append((self.av_pool(cutout) + self.max_pool(cutout)) / 2)
        batch = self.augs(torch.cat(cutouts, dim=0))
        if self.noise_fac:
            facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise_fac)
            batch = batch + facs * torch.randn_like(batch)
        return batch


def notebook_spherical_dist(feats: Tensor, target: Tensor) -> Tensor:
    """The notebook's ``Prompt.forward`` distance (stop = -inf): mean over cutouts.

    Shape:
        feats (N, D), target (1, D) -> ().
    """
    a = F.normalize(feats.unsqueeze(1), dim=2)
    b = F.normalize(target.unsqueeze(0), dim=2)
    return a.sub(b).norm(dim=2).div(2).arcsin().pow(2).mul(2).mean()


def reference_loop(generator: nn.Module, model: nn.Module, target: Tensor, *, cut_size: int,
                   cutn: int, cut_pow: float, lr: float, mean, std) -> Iterator[float]:
    """The notebook loop as a generator: one yielded loss (a Python float) per Adam step.

    Args:
        generator: anything with ``parameters()`` and ``render() -> (1, 3, H, W)`` in [0, 1].
        model: a raw open_clip model (``encode_image`` takes normalized pixels).
        target: the prompt's text embedding, (1, D).
        cut_size: CLIP input side.
        cutn: cutouts per step.
        cut_pow: crop size law exponent.
        lr: Adam learning rate.
        mean: CLIP's per-channel mean.
        std: CLIP's per-channel std.
    """
    from torchvision.transforms import Normalize

    make_cutouts = MakeCutouts(cut_size, cutn, cut_pow)
    normalize = Normalize(mean=list(mean), std=list(std))
    opt = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=lr)
    while True:
        opt.zero_grad(set_to_none=True)
        out = generator.render()
        feats = model.encode_image(normalize(make_cutouts(out))).float()
        loss = notebook_spherical_dist(feats, target)
        loss.backward()
        opt.step()
        yield loss.item()


# ---------------------------------------------------------------------------------------------
# harness


def _positive(name: str, low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a whole number, got {text!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name}: {value} is out of range; allowed: "
                                             f"{low} to {high}")
        return value
    return parse


def _choices(name: str, allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"{name}: {', '.join(bad) or text!r} is not one of "
                                             f"{', '.join(allowed)} (comma-separated)")
        return list(dict.fromkeys(values))
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--clip", default="ViT-B-32:random",
                   help="CLIP spec as clipforge.guidance.embedders.load_embedder takes it "
                        "(ARCH:random, a folder in open_clip's hub layout, ARCH:/path/weights)")
    p.add_argument("--size", type=_positive("size", 8, 4096), default=256,
                   help="image side in pixels")
    p.add_argument("--cutn", type=_positive("cutn", 1, 256), default=32, help="cutouts per step")
    p.add_argument("--steps", type=_positive("steps", 1, 10_000), default=3,
                   help="timed steps per round and loop")
    p.add_argument("--rounds", "--repeats", dest="rounds", type=_positive("rounds", 1, 1000),
                   default=3, help="rounds; each runs REFERENCE then every variant of OURS")
    p.add_argument("--warmup", type=_positive("warmup", 0, 1000), default=1,
                   help="untimed steps of each loop before the first round")
    p.add_argument("--threads", type=_positive("threads", 1, 1024), default=2,
                   help="torch intra-op threads")
    p.add_argument("--seed", type=_positive("seed", 0, 2**63 - 1), default=0, help="random seed")
    p.add_argument("--precision", type=_choices("precision", ("auto", "fp32", "bf16")),
                   default=["fp32", "auto"], help="precisions of OURS to time, comma-separated")
    p.add_argument("--compile", type=_choices("compile", ("off", "on")), default=["off"],
                   help="torch.compile settings of OURS to time, comma-separated")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON object on stdout (the report goes to "
                        "stderr)")
    return p


def _load(spec: str):
    from clipforge.guidance.clip_models import ModelLoadError, load_embedder

    try:
        return load_embedder(spec, "cpu")
    except ModelLoadError as e:
        raise SystemExit(f"step_speed.py: error: --clip: {e}")


def _timed(it: Iterator, n: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each of ``n`` steps of ``it``; this process's CPU seconds go to ``cpu``."""
    times = []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return times


class Timing:
    """The seconds of one loop: wall and CPU per timed step, and its first (warm-up) step."""

    def __init__(self, name: str, it: Iterator, **info):
        self.name, self.it, self.info = name, it, info
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.first: float | None = None

    def warm(self, n: int) -> None:
        if n:
            t = _timed(self.it, n)
            self.first = t[0]

    def round(self, n: int) -> float:
        t = _timed(self.it, n, self.cpu)
        self.wall += t
        return statistics.median(t)

    def summary(self) -> dict:
        return {"name": self.name, **self.info, "median_s": statistics.median(self.wall),
                "min_s": min(self.wall), "max_s": max(self.wall), "n": len(self.wall),
                "cpu_s": statistics.median(self.cpu), "first_step_s": self.first}


def gradient_cosine(emb, size: int, cutn: int, precision: str, seed: int) -> float:
    """Cosine between the image gradient of the guide's loss in ``precision`` and in fp32
    (the same image, prompt and cutouts)."""
    from clipforge.guidance.augment import Cutouts
    from clipforge.guidance.guide import Guide
    from clipforge.guidance.prompts import Prompt

    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    grads = []
    for p in ("fp32", precision):
        guide = Guide(emb, [Prompt(text=PROMPT)], Cutouts(emb.image_size, cutn),
                      generator=torch.Generator().manual_seed(seed), precision=p)
        x = image.clone().requires_grad_(True)
        guide.loss(x)[0].backward()
        grads.append(x.grad.flatten().double())
    return float(F.cosine_similarity(grads[0], grads[1], dim=0))


def main(argv: list[str] | None = None) -> float:
    """Run the benchmark, print the report, return the ratio reference/ours (defaults)."""
    args = build_parser().parse_args(argv)
    import json

    from clipforge.config import field_defaults
    from clipforge.generators.fourier import FourierGenerator
    from clipforge.guidance.augment import Cutouts
    from clipforge.guidance.guide import Guide
    from clipforge.guidance.prompts import Prompt
    from clipforge.loop import optimize
    from clipforge.precision import fast_bf16, resolve_precision

    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # kornia's random augmentations (reference) use the global RNG
    defaults = field_defaults()
    lr, cut_pow = defaults["lr"], defaults["cut_pow"]
    load_before = os.getloadavg()
    cpu = torch.device("cpu")

    emb = _load(args.clip)            # ClipEmbedder around the open_clip model (ours)
    model = emb.model                 # the very same model object, used raw (reference)
    size = emb.image_size
    total = args.warmup + args.steps * args.rounds

    def fourier() -> FourierGenerator:
        return FourierGenerator(args.size, args.size,
                                generator=torch.Generator().manual_seed(args.seed))

    def ours(precision: str, compiled: bool) -> Iterator:
        guide = Guide(emb, [Prompt(text=PROMPT)], Cutouts(size, args.cutn, cut_pow,
                                                          augment=defaults["augment"]),
                      tv_weight=defaults["tv_weight"], range_weight=defaults["range_weight"],
                      generator=torch.Generator().manual_seed(args.seed + 1), precision=precision)
        steps = optimize(fourier(), guide, total, lr=lr, optimizer=defaults["optimizer"],
                         schedule=defaults["schedule"])
        for step in steps:       # the embedder is shared: set its compile state for each step
            yield step
            emb.compile_tower(compiled)

    with torch.no_grad():
        target = model.encode_text(emb.tokenizer([PROMPT])).float()
    loops = [Timing("reference", reference_loop(
        fourier(), model, target, cut_size=size, cutn=args.cutn, cut_pow=cut_pow, lr=lr,
        mean=emb.mean.flatten().tolist(), std=emb.std.flatten().tolist()),
        precision="fp32", compile=False)]
    default_name = None
    for comp in args.compile:
        for prec in args.precision:
            resolved = resolve_precision(prec, cpu)
            name = f"ours[{resolved}{'+compile' if comp == 'on' else ''}]"
            if any(t.name == name for t in loops):   # auto resolved to a precision already listed
                continue
            if prec == defaults["precision"] and comp == "off":
                default_name = name
            emb.compile_tower(comp == "on")
            it = ours(prec, comp == "on")
            loops.append(Timing(name, it, precision=resolved, compile=comp == "on"))
    if default_name is None:
        default_name = loops[-1].name
    for t in loops:   # the compile state is set before each loop's first step and after each
        emb.compile_tower(t.info["compile"])
        t.warm(args.warmup)

    say(f"step speed: clip {args.clip} ({size} px input), image {args.size}x{args.size}, "
        f"{args.cutn} cutouts, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"bf16 hardware: {'yes' if fast_bf16(cpu) else 'no'}; {args.rounds} rounds x "
        f"{args.steps} steps each, {args.warmup} warm-up step(s) each")
    for r in range(1, args.rounds + 1):
        medians = []
        for t in loops:
            emb.compile_tower(t.info["compile"])
            medians.append(f"{t.name} {t.round(args.steps):.3f}")
        say(f"round {r}: " + ", ".join(medians) + " s/step")
    load_after = os.getloadavg()
    results = [t.summary() for t in loops]
    ref = results[0]
    for res in results:
        res["ratio"] = ref["median_s"] / res["median_s"]
        res["cpu_ratio"] = ref["cpu_s"] / res["cpu_s"]
        first = f"; first step {res['first_step_s']:.2f} s" if res["first_step_s"] else ""
        say(f"{res['name']:<9} median {res['median_s']:.3f} s/step (min {res['min_s']:.3f}, "
            f"max {res['max_s']:.3f}, n={res['n']}); CPU {res['cpu_s']:.3f} s/step{first}")
    for res in results[1:]:
        if res["precision"] != "fp32":
            res["grad_cosine"] = gradient_cosine(emb, args.size, args.cutn, res["precision"],
                                                 args.seed)
            say(f"{res['name']} image gradient vs fp32: cosine {res['grad_cosine']:.5f}")
    say("load average (1/5/15 min): before " + "/".join(f"{x:.2f}" for x in load_before)
        + ", after " + "/".join(f"{x:.2f}" for x in load_after) + f" on {os.cpu_count()} CPUs")
    ordered = [r for r in results[1:] if r["name"] != default_name] + \
        [r for r in results[1:] if r["name"] == default_name]
    for res in ordered:   # CPU seconds (all threads) are less sensitive to other processes' load
        say(f"CPU-time ratio reference/{res['name']}: {res['cpu_ratio']:.2f}x")
    for res in ordered:
        say(f"ratio reference/{res['name']}: {res['ratio']:.2f}x")
    if args.json:
        print(json.dumps({"clip": args.clip, "size": args.size, "cutn": args.cutn,
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "bf16_hardware": fast_bf16(cpu), "default": default_name,
                          "load_before": load_before, "load_after": load_after,
                          "loops": results}))
    return ordered[-1]["ratio"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
