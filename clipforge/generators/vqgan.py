"""VQGAN generator: optimize the continuous latent of a diffusers ``VQModel``; decode via codes.

At every render the latent is snapped to its nearest codebook vectors with a straight-through
gradient (the forward pass sees the codes, the backward pass treats the snap as identity), as
the VQGAN+CLIP notebooks did; ``quantize=False`` decodes the continuous latent instead
(smoother, but off the decoder's training distribution). The initial latent is a grid of random
codes. Any diffusers-format ``VQModel`` loads (hub id, local folder, ``subfolder``); a
taming-transformers checkpoint (``.ckpt`` + ``.yaml``) is converted once with
:func:`clipforge.generators.taming.convert_taming_checkpoint`.
Origin: Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis";
VQGAN+CLIP, Crowson et al. 2022, "VQGAN-CLIP: Open Domain Image Generation and Editing with
Natural Language Guidance".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.generators.clamp import clamp_with_grad
from clipforge.generators.draw import randint
from clipforge.generators.hub import (bundled_or_given, check_factor, load_diffusers_model,
                                      read_model_config)
from clipforge.images import fit_image

__all__ = ["VqganGenerator", "quantize_straight_through"]


def quantize_straight_through(z: Tensor, codebook: Tensor) -> Tensor:
    """Replace each latent vector by its nearest code; the gradient passes through unchanged.

    Args:
        z: the continuous latent.
        codebook: the codes, one a row.

    Shape:
        z (B, D, h, w), codebook (K, D) -> (B, D, h, w).
    """
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    idx = torch.cdist(flat.detach(), codebook).argmin(dim=1)
    q = codebook[idx].view(b, h, w, d).permute(0, 3, 1, 2)
    return z + (q - z).detach()


class VqganGenerator(nn.Module):
    """RGB image in [0, 1] decoded from an optimized VQGAN latent.

    Args:
        width: image width in pixels (a multiple of the model's down-sampling factor).
        height: image height in pixels (same).
        batch: images rendered at once.
        model: diffusers hub id or local folder of a ``VQModel``, or the bundled ``shapes-vq``.
        subfolder: folder inside ``model`` holding it (``vqvae`` in a pipeline repo), or None.
        quantize: snap the latent to the codebook at every render (straight-through gradient).
        generator: ``torch.Generator`` for the random initial codes.
        device: where the latent and the model live.

    Shape:
        render() -> (batch, 3, height, width) in [0, 1].

    ``size_multiple`` is 8 (f8 models); an f16 model is checked against 16 from its config.json
    before the weights load.
    """

    size_multiple = 8
    option_rules = {"subfolder": {"optional": True}}

    def __init__(self, width: int, height: int, *, batch: int = 1,
                 model: str = "microsoft/vq-diffusion-ithq", subfolder: str | None = "vqvae",
                 quantize: bool = True, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        from diffusers import VQModel

        model, subfolder = bundled_or_given(model, subfolder, "autoencoder")
        config = read_model_config(model, subfolder, what="VQ model")
        if config.get("_class_name") != "VQModel":
            raise ConfigError("model", f"{model!r} holds a {config.get('_class_name')!r}; the "
                              "vqgan generator takes a diffusers VQModel (use the vae "
                              "generator for AutoencoderKL / AutoencoderTiny)")
        self.factor = 2 ** (len(config.get("block_out_channels", (64,))) - 1)
        check_factor("vqgan", width, height, self.factor)
        self.vq = load_diffusers_model(VQModel, model, subfolder, what="VQ model").to(device)
        self.quantize = bool(quantize)
        self.width, self.height = width, height
        codebook = self.vq.quantize.embedding.weight
        h, w = height // self.factor, width // self.factor
        idx = randint(codebook.shape[0], (batch, h, w), generator, device)
        self.latent = nn.Parameter(codebook[idx].permute(0, 3, 1, 2).contiguous().clone())

    def render(self) -> Tensor:
        """Quantize (optionally), decode and map [-1, 1] to [0, 1].

        Shape:
            () -> (batch, 3, height, width) in [0, 1].
        """
        z = self.latent
        if self.quantize:
            z = quantize_straight_through(z, self.vq.quantize.embedding.weight)
        h = self.vq.post_quant_conv(z)
        x = self.vq.decoder(h, z if self.vq.config.norm_type == "spatial" else None)
        return clamp_with_grad((x + 1) / 2)

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Set the latent to the VQ encoder's code of ``image``, before quantization.

        Args:
            image: the picture to start from; fitted to (height, width) first, and the next
                render snaps its code to the codebook when ``quantize`` is on.

        Shape:
            image: (1 or B, 3, H, W) in [0, 1] -> latent (B, D, height / f, width / f).
        """
        x = fit_image(image, self.height, self.width, self.latent) * 2 - 1
        self.latent.copy_(self.vq.encode(x).latents.expand_as(self.latent))
