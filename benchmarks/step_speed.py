"""Seconds per optimization step: clipforge's loop against the classic VQGAN+CLIP notebook loop.

Both loops optimize the same kind of generator (``fourier``, same size and initial spectrum)
toward one text prompt through the SAME open_clip model object, with the same number of
cutouts, alternating rounds (ours, reference, ours, reference, ...) in one process so that a
change of machine load hits both alike. Warm-up steps are excluded. The median seconds per
step of each are printed, and the ratio reference/ours last.

OURS is :func:`clipforge.loop.optimize` with :class:`clipforge.guidance.guide.Guide` and
:class:`clipforge.guidance.augment.Cutouts` at clipforge's default settings (one batched
``grid_sample`` for all cutouts, no host sync per step).

REFERENCE is written from the documented behaviour of the loop popularised by Katherine
Crowson's VQGAN+CLIP notebook (2021) and its command-line descendant (nerdyrodent/VQGAN-CLIP,
``generate.py``, default augments ``Af Pe Ji Er``):

- ``MakeCutouts``: for each cutout, one at a time: a random size
  ``int(rand ** cut_pow * (max_size - min_size) + min_size)`` and offset, a slice, and
  ``(adaptive_avg_pool2d + adaptive_max_pool2d) / 2`` to the CLIP input size; ``torch.cat``;
- an augmentation stack on the batch, kornia-style (each sample drawn with probability p):
  random affine (15 degrees, translate 0.1, shear 5, p 0.7), random perspective (0.7, p 0.7),
  colour jitter (brightness, contrast, saturation, hue 0.1, p 0.7) and random erasing
  (scale 0.1-0.4, ratio 0.3-3.3, same on the batch, p 0.7); the geometric ones and erasing
  come from ``torchvision.transforms.v2`` (kornia is not a dependency), the jitter is written
  here because torchvision's hue adjustment is not differentiable;
- noise ``uniform(0, 0.1) * randn`` per cutout; CLIP normalize; ``encode_image``;
- the notebook's spherical distance loss; Adam; and ``loss.item()`` every step (the notebook
  reads the loss back for its progress display).

Randomness: clipforge draws from explicit ``torch.Generator`` objects; torchvision's random
transforms draw from the global RNG, which is seeded once with ``--seed``.

Usage::

    python benchmarks/step_speed.py          # ViT-B-32 (random init), 256 px, 32 cutouts
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


def _rgb_to_hsv(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Differentiable RGB -> HSV with hue in [0, 1) (as kornia's ``rgb_to_hsv``, hue rescaled).

    Shape:
        (N, 3, H, W) in [0, 1] -> (N, 3, H, W): hue [0, 1), saturation [0, 1], value [0, 1].
    """
    maxc, argmax = x.max(dim=-3)
    minc = x.min(dim=-3).values
    delta = maxc - minc
    s = delta / (maxc + eps)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc.unsqueeze(-3) - x).unbind(dim=-3)
    h = torch.stack((bc - gc, (rc - bc) + 2.0 * delta, (gc - rc) + 4.0 * delta), dim=-3)
    h = torch.gather(h / delta.unsqueeze(-3), -3, argmax.unsqueeze(-3)).squeeze(-3)
    h = (h / 6.0) % 1.0
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    """Differentiable HSV (hue in [0, 1)) -> RGB, as kornia's ``hsv_to_rgb``.

    Shape:
        (N, 3, H, W) -> (N, 3, H, W) in [0, 1].
    """
    h, s, v = x.unbind(dim=-3)
    h6 = (h * 6) % 6
    hi = torch.floor(h6)
    f = h6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.long().clamp(0, 5)
    table = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), dim=-3)
    index = torch.stack((hi, hi + 6, hi + 12), dim=-3)
    return torch.gather(table, -3, index)


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma, as torchvision's ``rgb_to_grayscale``; (N, 3, H, W) -> (N, 1, H, W)."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


class ColorJitter(nn.Module):
    """Kornia-style colour jitter: per-sample factors, the four adjustments in a random order.

    Brightness, contrast and saturation factors are drawn from ``[1 - a, 1 + a]``, the hue
    shift from ``[-hue, hue]`` (in turns); each result is clamped to [0, 1] as in torchvision
    and kornia. Differentiable with respect to the input.

    Args:
        brightness: half-width of the brightness factor range.
        contrast: half-width of the contrast factor range.
        saturation: half-width of the saturation factor range.
        hue: largest hue shift, as a fraction of a full turn.

    Shape:
        (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1].
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness, contrast, saturation, hue)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]

        def factor(a: float) -> Tensor:
            return (1 + (torch.rand(n, 1, 1, 1) * 2 - 1) * a).to(x)

        def brightness(y: Tensor) -> Tensor:
            return (y * factor(self.brightness)).clamp(0, 1)

        def contrast(y: Tensor) -> Tensor:
            mean = _gray(y).mean(dim=(-3, -2, -1), keepdim=True)
            f = factor(self.contrast)
            return (f * y + (1 - f) * mean).clamp(0, 1)

        def saturation(y: Tensor) -> Tensor:
            f = factor(self.saturation)
            return (f * y + (1 - f) * _gray(y)).clamp(0, 1)

        def hue(y: Tensor) -> Tensor:
            shift = ((torch.rand(n, 1, 1) * 2 - 1) * self.hue).to(y)
            hsv = _rgb_to_hsv(y)
            h = (hsv[:, 0] + shift) % 1.0
            return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)).clamp(0, 1)

        ops = (brightness, contrast, saturation, hue)
        for k in torch.randperm(4).tolist():
            x = ops[k](x)
        return x


class PerSample(nn.Module):
    """Apply ``op`` to the samples picked with probability ``p`` each (kornia's ``p``).

    Like kornia, only the picked samples are computed; the rest pass through unchanged.
    """

    def __init__(self, op: Callable[[Tensor], Tensor], p: float):
        super().__init__()
        self.op, self.p = op, p

    def forward(self, x: Tensor) -> Tensor:
        pick = torch.rand(x.shape[0]) < self.p
        if not pick.any():
            return x
        if pick.all():
            return self.op(x)
        idx = pick.nonzero().squeeze(1).to(x.device)
        return x.index_put((idx,), self.op(x.index_select(0, idx)))


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
        from torchvision.transforms import InterpolationMode, v2

        self.cut_size, self.cutn, self.cut_pow, self.noise_fac = cut_size, cutn, cut_pow, noise_fac
        bilinear = InterpolationMode.BILINEAR
        # fill=None: zero padding inside grid_sample (kornia's padding_mode="zeros"); torchvision's
        # fill path modifies the grid_sample output in place, which autograd refuses.
        self.augs = nn.Sequential(
            PerSample(v2.RandomAffine(degrees=15, translate=(0.1, 0.1), shear=5,
                                      interpolation=bilinear, fill=None), p=0.7),
            PerSample(v2.RandomPerspective(distortion_scale=0.7, p=1.0,
                                           interpolation=bilinear, fill=None), p=0.7),
            PerSample(ColorJitter(0.1, 0.1, 0.1, 0.1), p=0.7),
            v2.RandomErasing(p=0.7, scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), value=0),
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
                   default=3, help="rounds; each runs OURS then REFERENCE")
    p.add_argument("--warmup", type=_positive("warmup", 0, 1000), default=1,
                   help="untimed steps of each loop before the first round")
    p.add_argument("--threads", type=_positive("threads", 1, 1024), default=2,
                   help="torch intra-op threads")
    p.add_argument("--seed", type=_positive("seed", 0, 2**63 - 1), default=0, help="random seed")
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


def main(argv: list[str] | None = None) -> float:
    """Run the benchmark, print the report, return the ratio reference/ours."""
    args = build_parser().parse_args(argv)
    from clipforge.config import field_defaults
    from clipforge.generators.fourier import FourierGenerator
    from clipforge.guidance.augment import Cutouts
    from clipforge.guidance.guide import Guide
    from clipforge.guidance.prompts import Prompt
    from clipforge.loop import optimize

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # torchvision's random transforms (reference) use the global RNG
    defaults = field_defaults()
    lr, cut_pow = defaults["lr"], defaults["cut_pow"]
    load_before = os.getloadavg()

    emb = _load(args.clip)            # ClipEmbedder around the open_clip model (ours)
    model = emb.model                 # the very same model object, used raw (reference)
    size = emb.image_size
    total = args.warmup + args.steps * args.rounds

    def fourier() -> FourierGenerator:
        return FourierGenerator(args.size, args.size,
                                generator=torch.Generator().manual_seed(args.seed))

    # OURS: the library loop at its default settings
    cutouts = Cutouts(size, args.cutn, cut_pow, augment=defaults["augment"])
    guide = Guide(emb, [Prompt(text=PROMPT)], cutouts, tv_weight=defaults["tv_weight"],
                  range_weight=defaults["range_weight"],
                  generator=torch.Generator().manual_seed(args.seed + 1))
    ours = optimize(fourier(), guide, total, lr=lr, optimizer=defaults["optimizer"],
                    schedule=defaults["schedule"])

    # REFERENCE: the notebook loop on the same model
    with torch.no_grad():
        tokens = emb.tokenizer([PROMPT])
        target = model.encode_text(tokens).float()
    reference = reference_loop(fourier(), model, target, cut_size=size, cutn=args.cutn,
                               cut_pow=cut_pow, lr=lr, mean=emb.mean.flatten().tolist(),
                               std=emb.std.flatten().tolist())

    print(f"step speed: clip {args.clip} ({size} px input), image {args.size}x{args.size}, "
          f"{args.cutn} cutouts, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.rounds} rounds x {args.steps} steps each, {args.warmup} warm-up step(s) each",
          flush=True)
    _timed(ours, args.warmup)
    _timed(reference, args.warmup)
    t_ours: list[float] = []
    t_ref: list[float] = []
    c_ours: list[float] = []
    c_ref: list[float] = []
    for r in range(1, args.rounds + 1):
        a = _timed(ours, args.steps, c_ours)
        b = _timed(reference, args.steps, c_ref)
        t_ours += a
        t_ref += b
        print(f"round {r}: ours {statistics.median(a):.3f} s/step, "
              f"reference {statistics.median(b):.3f} s/step", flush=True)
    ours.close()
    reference.close()
    load_after = os.getloadavg()
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    print(f"ours      median {m_ours:.3f} s/step (min {min(t_ours):.3f}, max {max(t_ours):.3f}, "
          f"n={len(t_ours)}); CPU {statistics.median(c_ours):.3f} s/step")
    print(f"reference median {m_ref:.3f} s/step (min {min(t_ref):.3f}, max {max(t_ref):.3f}, "
          f"n={len(t_ref)}); CPU {statistics.median(c_ref):.3f} s/step")
    # CPU seconds (all threads of this process) are less sensitive to other processes' load
    print(f"CPU-time ratio reference/ours: "
          f"{statistics.median(c_ref) / statistics.median(c_ours):.2f}x")
    print("load average (1/5/15 min): before "
          + "/".join(f"{x:.2f}" for x in load_before) + ", after "
          + "/".join(f"{x:.2f}" for x in load_after) + f" on {os.cpu_count()} CPUs")
    ratio = m_ref / m_ours
    print(f"ratio reference/ours: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
