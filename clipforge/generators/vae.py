"""Autoencoder-latent generator: optimize the latent of a diffusers autoencoder and decode it.

Works with ``AutoencoderTiny`` (the TAESD family: ``madebyollin/taesd``, ``madebyollin/taesdxl``)
and ``AutoencoderKL`` (the Stable Diffusion VAEs), loaded with diffusers' own ``from_pretrained``
from a hub id or a local folder. The parameter is the *scaled* latent
``(z - shift_factor) * scaling_factor`` (the diffusion models' unit-variance space), so one
learning rate suits every model. A decoder's output can leave [-1, 1]; it is clamped with a
gradient that still pushes out-of-range pixels back inward, as the VQGAN+CLIP notebooks did.
Origin: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models";
TAESD by Ollin Boer Bohan; "optimize the latent, decode" from the VQGAN+CLIP notebooks
(Crowson 2021).

Loading goes through :mod:`clipforge.generators.hub` and the clamp through
:mod:`clipforge.generators.clamp`, both shared with the ``vqgan`` generator.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.generators.clamp import clamp_with_grad
from clipforge.generators.draw import randn
from clipforge.generators.hub import (bundled_or_given, check_factor, load_diffusers_model,
                                      read_model_config)
from clipforge.images import fit_image

_AUTOENCODERS = ("AutoencoderTiny", "AutoencoderKL")


def down_factor(config: dict[str, Any]) -> int:
    """Spatial down-sampling factor of a diffusers autoencoder, from its config alone.

    Args:
        config: the model's ``config.json`` as a dict (``_class_name`` decides the keys read).
    """
    name = config.get("_class_name")
    if name == "AutoencoderTiny":
        enc = 2 ** (len(config.get("encoder_block_out_channels", (64,) * 4)) - 1)
        dec = config.get("upsampling_scaling_factor", 2) ** (
            len(config.get("decoder_block_out_channels", (64,) * 4)) - 1)
        if enc != dec:
            raise ConfigError("model", f"AutoencoderTiny with encoder factor {enc} and decoder "
                              f"factor {dec} is not supported (they must be equal)")
        return enc
    return 2 ** (len(config.get("block_out_channels", (64,))) - 1)


class VaeGenerator(nn.Module):
    """RGB image in [0, 1] decoded from an optimized autoencoder latent.

    Args:
        width: image width in pixels (a multiple of the model's down-sampling factor).
        height: image height in pixels (same).
        batch: images rendered at once.
        model: diffusers hub id or local folder of an ``AutoencoderTiny`` or ``AutoencoderKL``,
            or the bundled ``shapes-vae``.
        subfolder: folder inside ``model`` holding it (``vae`` in a pipeline repo), or None.
        init_std: standard deviation of the random initial latent, in scaled-latent units.
        generator: ``torch.Generator`` for the initial latent.
        device: where the latent and the autoencoder live.

    Shape:
        render() -> (batch, 3, height, width) in [0, 1].

    ``size_multiple`` is 8, the factor of every TAESD and Stable Diffusion VAE; a model with
    another factor is checked against its own (from config.json, before the weights load).
    """

    size_multiple = 8
    option_rules = {"subfolder": {"type": str}, "init_std": {"min": 0, "max": 1e3}}

    def __init__(self, width: int, height: int, *, batch: int = 1,
                 model: str = "madebyollin/taesd", subfolder: str | None = None,
                 init_std: float = 1.0, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        import diffusers

        if not (init_std >= 0.0):
            raise ConfigError("init_std", f"must be >= 0, got {init_std!r}")
        model, subfolder = bundled_or_given(model, subfolder, "autoencoder")
        config = read_model_config(model, subfolder, what="autoencoder")
        name = config.get("_class_name")
        if name not in _AUTOENCODERS:
            raise ConfigError("model", f"{model!r} holds a {name!r}; the vae generator takes "
                              f"{' or '.join(_AUTOENCODERS)} (use the vqgan generator for "
                              "VQModel)")
        self.factor = down_factor(config)
        check_factor("vae", width, height, self.factor)
        self.vae = load_diffusers_model(getattr(diffusers, name), model, subfolder,
                                        what="autoencoder").to(device)
        cfg = self.vae.config
        self.scaling = float(getattr(cfg, "scaling_factor", None) or 1.0)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.width, self.height = width, height
        channels = cfg.latent_channels
        shape = (batch, channels, height // self.factor, width // self.factor)
        self.latent = nn.Parameter(randn(shape, generator, device) * init_std)

    def render(self) -> Tensor:
        """Decode the latent and map [-1, 1] to [0, 1].

        Shape:
            () -> (batch, 3, height, width) in [0, 1].
        """
        z = self.latent / self.scaling + self.shift
        x = self.vae.decode(z).sample
        return clamp_with_grad((x + 1) / 2)

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Set the latent to the autoencoder's code of ``image`` (the mode for a KL VAE), scaled.

        Args:
            image: the picture to start from; fitted to (height, width) first.

        Shape:
            image: (1 or B, 3, H, W) in [0, 1] -> latent (B, C, height / f, width / f).
        """
        x = fit_image(image, self.height, self.width, self.latent) * 2 - 1
        enc = self.vae.encode(x)
        z = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode()
        self.latent.copy_(((z - self.shift) * self.scaling).expand_as(self.latent))
