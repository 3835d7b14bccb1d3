"""Peak CPU memory of one optimization step (render, loss, backward) per generator and size.

Each measurement runs in a fresh subprocess. The models have the real architectures (TAESD,
Stable Diffusion VAE, taming VQGAN ImageNet f16-16384, BigGAN-deep 256 / 512) with random
weights, written once to a temporary folder in their on-disk formats, so no download is needed;
the ``noise-N`` cases run the bundled shapes DDPM through N sampler steps (``-ckpt``: with
gradient checkpointing).
In the child, the peak resident set is reset after loading (``/proc/self/clear_refs``), one
step runs, and ``VmHWM`` is read: "step" is that peak minus the resident set just before the
step, "peak" the whole process's high-water mark including the model. ``tracemalloc`` cannot
see torch's allocations, hence RSS.

Usage:
    python benchmarks/generator_memory.py [--sizes 256 512] [--only vae-sd biggan]
    python benchmarks/generator_memory.py --sizes 128 256 --only noise-1 noise-4 noise-4-ckpt
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VQGAN_F16 = {"embed_dim": 256, "n_embed": 16384, "ddconfig": {
    "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
    "dropout": 0.0}}


def biggan_config(res: int) -> dict:
    mults = {128: [16, 16, 8, 4, 2, 1], 256: [16, 16, 8, 8, 4, 2, 1],
             512: [16, 16, 8, 8, 4, 2, 1, 1]}[res]
    layers = []
    for a, b in zip(mults, mults[1:]):
        layers += [[False, a, a], [True, a, b]]
    return {"output_dim": res, "z_dim": 128, "class_embed_dim": 128, "channel_width": 128,
            "num_classes": 1000, "layers": layers, "attention_layer_position": 8, "eps": 1e-4,
            "n_stats": 51}


def write_models(root: Path, only: list[str] | None = None) -> dict[str, tuple[str, dict]]:
    """Random realistic models on disk (those in ``only``) -> {case: (generator, options)}."""
    def wanted(case: str) -> bool:
        return only is None or case in only

    import torch

    torch.manual_seed(0)
    if only is None or {"vae-taesd", "vae-sd", "vqgan-f16"} & set(only):
        from diffusers import AutoencoderKL, AutoencoderTiny, VQModel

        from clipforge.generators.taming import taming_config_to_diffusers
    if wanted("vae-taesd"):  # diffusers' defaults are TAESD's architecture
        AutoencoderTiny().save_pretrained(root / "taesd")
    if wanted("vae-sd"):
        AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                      down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                      sample_size=512).save_pretrained(root / "sd-vae")
    if wanted("vqgan-f16"):
        VQModel(**taming_config_to_diffusers(VQGAN_F16)).save_pretrained(root / "vqgan-f16")
    for res in (256, 512):
        if wanted(f"biggan-deep-{res}"):
            from clipforge.generators.biggan_net import BigGANDeep

            folder = root / f"biggan-{res}"
            folder.mkdir()
            cfg = biggan_config(res)
            torch.save(BigGANDeep(cfg).state_dict(), folder / "pytorch_model.bin")
            (folder / "config.json").write_text(json.dumps(cfg))
    return {"pixel": ("pixel", {}), "fourier": ("fourier", {}),
            "vae-taesd": ("vae", {"model": str(root / "taesd")}),
            "vae-sd": ("vae", {"model": str(root / "sd-vae")}),
            "vqgan-f16": ("vqgan", {"model": str(root / "vqgan-f16"), "subfolder": None}),
            "biggan-deep-256": ("biggan", {"model": str(root / "biggan-256")}),
            "biggan-deep-512": ("biggan", {"model": str(root / "biggan-512")}),
            # the bundled shapes DDPM: memory per sampler step count, with and without
            # gradient checkpointing (the UNet is convolutional, so it runs at any size)
            **{f"noise-{n}{'-ckpt' if ck else ''}": ("noise", {"sampler_steps": n,
                                                             "checkpointing": ck})
               for n in (1, 2, 4, 8) for ck in (False, True)}}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_one(name: str, options: dict, size: int) -> dict:
    """Build the generator, then one render + loss + backward; memory in MiB."""
    import torch

    from clipforge.registry import build_generator

    gen = build_generator(name, size, size, options=options,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # page in weights that loading left memory-mapped, so that "loaded"
        for t in [*gen.parameters(), *gen.buffers()]:  # counts them and "step" does not
            t.sum()
    gc.collect()
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    image = gen.render()
    loss = (image - 0.5).square().mean()
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    return {"loaded_mib": before / 1024, "step_mib": (peak - before) / 1024 if reset else None,
            "peak_mib": peak / 1024, "seconds": seconds, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--only", nargs="*", default=None, help="cases to run (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one measurement, in a fresh process
        spec = json.loads(args.child)
        print(json.dumps(measure_one(spec["name"], spec["options"], spec["size"])))
        return
    with tempfile.TemporaryDirectory(prefix="clipforge-mem-") as tmp:
        cases = write_models(Path(tmp), args.only)
        rows = []
        print("| generator | size | loaded model, MiB | one step, MiB | process peak, MiB | "
              "step seconds |\n|---|---|---|---|---|---|", flush=True)
        for case, (name, options) in cases.items():
            if args.only and case not in args.only:
                continue
            for size in args.sizes:
                if case.startswith("biggan") and not case.endswith(str(size)):
                    continue  # BigGAN makes its native size only
                spec = json.dumps({"name": name, "options": options, "size": size})
                proc = subprocess.run([sys.executable, __file__, "--child", spec],
                                      capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if proc.returncode:
                    print(f"{case} {size}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append((case, size, r))
                step = f"{r['step_mib']:.0f}" if r["step_mib"] is not None else "n/a"
                print(f"| {case} | {size} | {r['loaded_mib']:.0f} | {step} | "
                      f"{r['peak_mib']:.0f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
