"""Train the bundled shapes autoencoders: `shapes-vae` (AutoencoderKL) and `shapes-vq` (VQModel).

They give the `vae` and `vqgan` generators a latent space to steer offline: each is a small
diffusers model (factor 4: a 128 px image is a 32x32 latent) trained to reconstruct the
procedural captioned-shapes images, so its decoder turns latents into clean shapes on plain
backgrounds, a prior the CLIP guide cannot bend into texture. They are trained on 32 px images
with narrow channels (16, 32, 32) so that a run takes minutes on 2 CPU cores (about 0.14 s per
step quiet; the first recipe, 64 px with (32, 64, 64), took about 6 s per step loaded); being
fully convolutional, they decode any size that is a multiple of 4. The VAE follows Kingma &
Welling 2014 / Rombach et al. 2022 (reconstruction + a small KL term; the latent is scaled to unit
variance by ``scaling_factor``, measured on the data); the VQ model van den Oord et al. 2017 /
Esser et al. 2021 (nearest-code quantization with a commitment loss). Both are saved with
diffusers' own ``save_pretrained`` (safetensors) under ``clipforge/assets/``.

Everything is seeded: the same command gives the same weights on the same machine.

    python scripts/make_shapes_autoencoders.py                      # both, into clipforge/assets
    python scripts/make_shapes_autoencoders.py --only shapes-vq --steps 20 --out /tmp/ae
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCH = {"in_channels": 3, "out_channels": 3, "block_out_channels": [16, 32, 32],
        "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8, "sample_size": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3}
RECIPES = {
    "shapes-vae": {"cls": "AutoencoderKL", "seed": 0, "steps": 2000, "batch": 32, "lr": 1e-3,
                   "kl": 1e-6},
    "shapes-vq": {"cls": "VQModel", "seed": 1, "steps": 2000, "batch": 32, "lr": 1e-3,
                  "codes": 256, "commit": 0.25},
}


def build(name: str):
    """A fresh model of the recipe's class with the shared architecture."""
    import diffusers

    r = RECIPES[name]
    extra = {"num_vq_embeddings": r["codes"], "vq_embed_dim": ARCH["latent_channels"],
             "mid_block_add_attention": False} if r["cls"] == "VQModel" else \
        {"mid_block_add_attention": False}
    return getattr(diffusers, r["cls"])(**ARCH, **extra)


def losses(model, x: torch.Tensor, r: dict, g: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Reconstruction loss (L1 + MSE, in [-1, 1] units) plus the KL or commitment term."""
    if r["cls"] == "VQModel":
        out = model(x)
        rec, extra = out.sample, r["commit"] * out.commit_loss.mean()
    else:
        post = model.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec, extra = model.decode(z).sample, r["kl"] * post.kl().mean()
    l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
    return l1 + l2 + extra, {"l1": float(l1.detach()), "extra": float(extra.detach())}


def train(name: str, steps: int | None = None, log_every: int = 100):
    """Train one autoencoder; returns (model, its measured latent std, provenance)."""
    from clipforge.loop import lr_factor
    from clipforge.training.shapes import ShapesDataset

    r = dict(RECIPES[name])
    steps = steps or r["steps"]
    torch.manual_seed(r["seed"])
    model = build(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=0.0)
    data = ShapesDataset(image_size=ARCH["sample_size"]).stream(r["batch"], seed=r["seed"])
    g = torch.Generator().manual_seed(r["seed"] + 7)
    t0, running = time.perf_counter(), {}
    for k in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = r["lr"] * lr_factor(k, steps, max(1, steps // 20), "cosine")
        loss, parts = losses(model, next(data).images * 2 - 1, r, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for key, v in parts.items():
            running[key] = running.get(key, 0.0) + v
        if (k + 1) % log_every == 0 or k + 1 == steps:
            n = log_every if (k + 1) % log_every == 0 else (k + 1) % log_every
            print(f"{name} step {k + 1}/{steps} " + " ".join(f"{a} {v / n:.4f}" for a, v in
                  running.items()) + f" {time.perf_counter() - t0:.0f}s", flush=True)
            running = {}
    model.eval()
    val = ShapesDataset(image_size=ARCH["sample_size"]).split("val", 256).images * 2 - 1
    with torch.no_grad():
        enc = model.encode(val)
        z = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode()
        rec = model.decode(z).sample
    prov = {"recipe": "scripts/make_shapes_autoencoders.py", **r, "steps": steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "val_l1": round(float((rec - val).abs().mean()), 4),
            "val_psnr": round(float(10 * torch.log10(4 / (rec - val).pow(2).mean())), 2)}
    return model, float(z.std()), prov


def save(model, latent_std: float, prov: dict, out: Path) -> Path:
    """``save_pretrained`` (safetensors) into a folder that appears whole or not at all."""
    from clipforge.outputs import atomic_dir

    model.register_to_config(scaling_factor=round(1.0 / latent_std, 5))
    with atomic_dir(out, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "clipforge.json").write_text(json.dumps(prov, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "clipforge" / "assets")
    ap.add_argument("--only", choices=sorted(RECIPES), action="append")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.only or list(RECIPES):
        model, std, prov = train(name, args.steps)
        path = save(model, std, prov, args.out / name)
        print(json.dumps({"model": name, "path": str(path), "latent_std": round(std, 4), **prov}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
