"""Train the bundled diffusion prior: a tiny pixel-space DDPM on the procedural `shapes` data set.

The prior lets guided diffusion run offline, end to end, in tests and demos: CLIP guidance
(the bundled `shapes` CLIP) steers its samples toward a prompt. It is a diffusers
``UNet2DModel`` (0.6M parameters, 32x32 px) trained with the noise-prediction objective of
Ho et al. 2020, "Denoising Diffusion Probabilistic Models", on a cosine noise schedule (Nichol &
Dhariwal 2021), with an exponential moving average of the weights. It is saved as a
``DDPMPipeline`` with diffusers' ``save_pretrained`` in safetensors, so the same loading code
reads it and the DDPM models on the Hugging Face hub (e.g. ``google/ddpm-cifar10-32``).

Everything is seeded: the same command gives the same weights on the same machine.

    .venv/bin/python scripts/make_diffusion_prior.py            # -> clipforge/assets/shapes-ddpm
    .venv/bin/python scripts/make_diffusion_prior.py --steps 20 --out /tmp/prior   # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "clipforge" / "assets" / "shapes-ddpm"


def build_unet(size: int = 32):
    """The prior's architecture: three levels (32, 16, 8 px), no attention, 0.6M parameters."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3,
                       block_out_channels=(16, 32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       norm_num_groups=16, add_attention=False)


def train(steps: int, batch: int, lr: float, seed: int, size: int = 32, log_every: int = 100):
    """Train the DDPM; returns (EMA unet, scheduler).

    Args:
        steps: optimizer steps.
        batch: images per step.
        lr: peak AdamW learning rate (linear warm-up, cosine decay).
        seed: seeds the weights, the data stream and the noise.
        size: image side in pixels.
        log_every: print the running loss every this many steps.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from clipforge.training.shapes import ShapesDataset

    torch.manual_seed(seed)
    unet = build_unet(size)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                          prediction_type="epsilon", clip_sample=True)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    lam = lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, k / steps)))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    data = ShapesDataset(image_size=size).stream(batch, seed=seed, split="train")
    g = torch.Generator().manual_seed(seed + 1)
    t0, c0, running = time.perf_counter(), time.process_time(), 0.0
    for k in range(1, steps + 1):
        x0 = next(data).images * 2 - 1
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=g)
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        ema.step(unet.parameters())
        running += float(loss.detach())
        if k % log_every == 0 or k == steps:
            n = log_every if k % log_every == 0 else k % log_every
            print(f"step {k}/{steps}  loss {running / n:.4f}  "
                  f"{time.perf_counter() - t0:.0f}s wall  {time.process_time() - c0:.0f}s CPU",
                  flush=True)
            running = 0.0
    ema.copy_to(unet.parameters())
    return unet.eval(), sched


def save(unet, scheduler, out: Path) -> Path:
    """Write the pipeline with ``save_pretrained`` (safetensors) and swap it into place."""
    from diffusers import DDPMPipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the asset is read by everyone
    try:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=32, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    unet, sched = train(a.steps, a.batch, a.lr, a.seed)
    out = save(unet, sched, a.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"saved {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s wall, "
          f"{time.process_time() - c0:.0f}s CPU")


if __name__ == "__main__":
    main()
