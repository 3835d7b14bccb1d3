"""The GPU check in one script: ms/step against the FLOP floor, peak memory, and ``pytest -m gpu``.

For each generator (pixel, fourier, vae, diffusion) and image size (256 and 512 px) it builds
a real :class:`clipforge.runner.Run` (the path every front end takes) guided by ViT-B-32
(random weights: speed does not depend on the weights) with 32 cutouts, and prints:

- ms per step: the median of the timed steps after warm-up (the device synchronized around
  each step), for each precision asked for (``--precision``) and, with ``--compile``, compiled;
- the FLOP floor: the step's floating-point operations, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` over one real step, divided by this device's
  measured bf16 (and fp32) matmul rate (a large square matmul timed here, so the floor is the
  device's own and needs no table of chips); and the ratio ms/floor;
- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS on CPU.

Then it runs ``pytest -m gpu`` (the project's GPU tests) and prints their summary line. It
installs nothing beyond the project and needs no network (the vae generator gets a random
TAESD-shaped ``AutoencoderTiny`` saved with diffusers' own ``save_pretrained``; diffusion uses
the bundled ``shapes-ddpm``). Budget: under 5 minutes on one GPU with the defaults.

Usage::

    python benchmarks/gpu_step.py                       # the GPU check (CUDA)
    python benchmarks/gpu_step.py --device cpu --quick  # the same script end to end on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a watercolor painting of a lighthouse in a storm"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--clip", default="ViT-B-32:random", help="the guiding CLIP")
    p.add_argument("--generators", default="pixel,fourier,vae,diffusion")
    p.add_argument("--sizes", default="256,512", help="image sides, comma-separated")
    p.add_argument("--cutn", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="fp32,bf16", help="precisions, comma-separated")
    p.add_argument("--compile", action="store_true", help="also time the compiled CLIP tower "
                                                           "(pixel, first size, bf16)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: the bundled shapes CLIP, 64 px, 4 cutouts, 2 steps")
    p.add_argument("--no-pytest", action="store_true", help="skip `pytest -m gpu`")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on ``device`` (best of a few)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n ** 3 / best


def peak_memory(device: torch.device) -> int:
    """Peak bytes: allocated on CUDA since the last reset, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def random_taesd(folder: Path) -> str:
    """A random AutoencoderTiny with TAESD's architecture, saved by diffusers itself."""
    from diffusers import AutoencoderTiny
    from diffusers.utils import logging

    logging.set_verbosity_error()   # its own saved config warns about a key it does not read
    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)
    return str(folder)


def measure(cfg, device: torch.device, steps: int, warmup: int) -> dict:
    """ms/step, FLOPs/step and peak memory of one run of ``cfg``."""
    from torch.utils.flop_counter import FlopCounterMode

    from clipforge.runner import Run

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run = Run(cfg, device=device)
    it = iter(run)
    load_s = time.perf_counter() - t0
    for _ in range(warmup):
        next(it)
    sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        next(it)
        sync(device)
        times.append(time.perf_counter() - t)
    flops = None
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            next(it)
        flops = counter.get_total_flops()
    except RuntimeError as e:   # a sampler's autograd.grad is beyond FlopCounterMode (torch 2.14)
        print(f"  (FLOPs not counted: {str(e).splitlines()[0][:90]})", flush=True)
    sync(device)
    out = {"ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
           "flops": flops, "peak_bytes": peak_memory(device),
           "load_s": load_s, "precision": run.config.precision, "compile": cfg.compile}
    it.close()
    run.release()
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from clipforge.config import RunConfig
    from clipforge.runner import resolve_device

    device = resolve_device(args.device)
    if args.quick:
        args.clip, args.sizes, args.cutn, args.steps, args.warmup = "shapes", "64", 4, 2, 1
    sizes = [int(s) for s in args.sizes.split(",")]
    gens = [g for g in args.generators.split(",") if g]
    precisions = [p for p in args.precision.split(",") if p]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    n = 2048 if device.type == "cpu" else 8192
    rates = {p: matmul_rate(device, {"fp32": torch.float32, "bf16": torch.bfloat16}[p], n)
             for p in ("fp32", "bf16")}
    print(f"gpu_step: {name}, torch {torch.__version__}; measured matmul {n}x{n}: "
          f"fp32 {rates['fp32'] / 1e12:.2f} TFLOP/s, bf16 {rates['bf16'] / 1e12:.2f} TFLOP/s; "
          f"clip {args.clip}, {args.cutn} cutouts, {args.steps} timed steps", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        options = {"vae": {"model": random_taesd(Path(tmp) / "taesd")} if "vae" in gens else {},
                   "diffusion": {"model": "shapes-ddpm"}}
        plan = [(g, s, p, False) for g in gens for s in sizes for p in precisions]
        if args.compile:
            plan.append((gens[0], sizes[0], "bf16", True))
        for gen, size, prec, comp in plan:
            cfg = RunConfig(prompt=PROMPT, clip=(args.clip,), generator=gen,
                            generator_options=options.get(gen, {}), width=size, height=size,
                            cutn=args.cutn, steps=args.warmup + args.steps + 1, precision=prec,
                            compile=comp, seed=0)
            try:
                r = measure(cfg, device, args.steps, args.warmup)
            except Exception as e:  # one failing generator must not hide the others' numbers
                print(f"{gen:<9} {size:>4} px {prec}: FAILED: {type(e).__name__}: {e}",
                      flush=True)
                results.append({"generator": gen, "size": size, "precision": prec,
                                "error": f"{type(e).__name__}: {e}"})
                continue
            floor_ms = 1000 * r["flops"] / rates[r["precision"]] if r["flops"] else None
            r.update(generator=gen, size=size, floor_ms=floor_ms,
                     over_floor=r["ms"] / floor_ms if floor_ms else None)
            results.append(r)
            floor = (f"{r['flops'] / 1e9:.1f} GFLOP/step, floor {floor_ms:.1f} ms, "
                     f"{r['over_floor']:.1f}x the floor" if floor_ms else "floor not known")
            print(f"{gen:<9} {size:>4} px {r['precision']}{'+compile' if comp else ''}: "
                  f"{r['ms']:.1f} ms/step (min {r['min_ms']:.1f}); {floor}; peak memory "
                  f"{r['peak_bytes'] / 2**30:.2f} GiB; model load {r['load_s']:.1f} s", flush=True)
    summary = None
    if not args.no_pytest:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                            "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        summary = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"pytest -m gpu: {summary} (exit {p.returncode})", flush=True)
        if p.returncode not in (0, 5):
            print(p.stdout[-4000:], p.stderr[-2000:], sep="\n")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__,
                                         "matmul_flops": rates, "results": results,
                                         "pytest_gpu": summary}, indent=1))
    failed = any("error" in r for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
