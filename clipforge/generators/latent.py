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

The helpers below (:func:`load_diffusers_model`, :func:`clamp_with_grad`) are shared with the
``vqgan`` generator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipforge.config import ConfigError
from clipforge.images import fit_image

# ---------------------------------------------------------------------------------------------
# shared helpers


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose backward passes the gradient where it would move a value back into range."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # descent moves x by -grad: outside the range keep only the inward-pointing part
        keep = (x >= ctx.lo) & (x <= ctx.hi) | ((x < ctx.lo) & (grad < 0)) | \
            ((x > ctx.hi) & (grad > 0))
        return grad * keep, None, None


def clamp_with_grad(x: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """``x.clamp(lo, hi)`` whose gradient is not zero outside the range when it points inward.

    Origin: ``ClampWithGrad`` of the VQGAN+CLIP notebooks (Crowson 2021).

    Shape:
        any -> same shape, values in [lo, hi].
    """
    return _ClampWithGrad.apply(x, lo, hi)


def is_local_path(model: str) -> bool:
    """True when ``model`` names a local folder rather than a hub id (``org/name``)."""
    p = Path(model).expanduser()
    return p.exists() or model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 \
        or "\\" in model or (len(model) > 1 and model[1] == ":")


def _offline_hint(what: str, model: str, subfolder: str | None, err: BaseException) -> str:
    sub = f" (subfolder {subfolder!r})" if subfolder else ""
    first = str(err).splitlines()[0][:200] if str(err) else ""
    return (f"cannot load {what} {model!r}{sub} from the Hugging Face hub "
            f"({type(err).__name__}: {first}). If this machine is offline, download it on "
            f"another one (`huggingface-cli download {model} --local-dir DIR`) and pass the "
            "local folder instead: model=DIR (a folder holding config.json and "
            "diffusion_pytorch_model.safetensors)")


def read_model_config(model: str, subfolder: str | None = None, *, what: str,
                      field: str = "model") -> dict[str, Any]:
    """The ``config.json`` of a diffusers model folder or hub repo, read without loading weights.

    Args:
        model: hub id (``org/name``) or local folder.
        subfolder: folder inside it (``vae``, ``vqvae``), or None.
        what: a noun for messages (``autoencoder``).
        field: the option named in errors.

    Raises:
        ConfigError: missing folder or config, or a failed download (saying how to go offline).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(field, f"{what}: expected a hub id (org/name) or a local folder, "
                          f"got {model!r}")
    if is_local_path(model):
        folder = Path(model).expanduser() / (subfolder or "")
        cfg_file = folder / "config.json"
        if not folder.is_dir():
            raise ConfigError(field, f"{what} folder {str(folder)!r} does not exist (pass a "
                              "diffusers model folder, or a hub id such as org/name)")
        if not cfg_file.is_file():
            hint = (" It holds a whole pipeline (model_index.json): name the component's "
                    "folder with subfolder=, e.g. 'vae' or 'vqvae'."
                    if (folder / "model_index.json").is_file() else "")
            raise ConfigError(field, f"{what} folder {str(folder)!r} has no config.json; it "
                              "is not a diffusers model folder (see save_pretrained)." + hint)
        try:
            return json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(field, f"{what}: cannot read {str(cfg_file)!r}: {e}") from None
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(model, "config.json", subfolder=subfolder or None)
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as e:  # offline, unknown repo, gated repo: all end in one clear message
        raise ConfigError(field, _offline_hint(what, model, subfolder, e)) from None


def load_diffusers_model(cls, model: str, subfolder: str | None = None, *, what: str,
                         field: str = "model"):
    """``cls.from_pretrained(model, subfolder=...)``, frozen and in eval mode, with clear errors.

    Weights load the way diffusers loads them (safetensors first; PyTorch files with
    ``weights_only``).
    """
    from importlib.util import find_spec

    kwargs: dict[str, Any] = {"subfolder": subfolder} if subfolder else {}
    # without accelerate diffusers falls back to this anyway, with a warning on every load
    kwargs["low_cpu_mem_usage"] = find_spec("accelerate") is not None
    try:
        net = cls.from_pretrained(model if not is_local_path(model) else
                                  str(Path(model).expanduser()), **kwargs)
    except Exception as e:
        if is_local_path(model):
            raise ConfigError(field, f"{what}: cannot load {model!r}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
        raise ConfigError(field, _offline_hint(what, model, subfolder, e)) from None
    return net.eval().requires_grad_(False)


def check_factor(generator: str, width: int, height: int, factor: int) -> None:
    """Raise ConfigError naming the nearest allowed size when a side is not a multiple."""
    if width % factor or height % factor:
        near = (max(factor, round(width / factor) * factor),
                max(factor, round(height / factor) * factor))
        raise ConfigError("size", f"{width}x{height}: generator {generator!r} with this model "
                          f"makes sizes that are multiples of {factor}; nearest allowed: "
                          f"{near[0]}x{near[1]}")


def _randn(shape, generator: torch.Generator | None, device) -> Tensor:
    g_dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=g_dev).to(device)


# ---------------------------------------------------------------------------------------------
# the generator

_AUTOENCODERS = ("AutoencoderTiny", "AutoencoderKL")


def down_factor(config: dict[str, Any]) -> int:
    """Spatial down-sampling factor of a diffusers autoencoder, from its config alone."""
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
        model: diffusers hub id or local folder of an ``AutoencoderTiny`` or ``AutoencoderKL``.
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

    def __init__(self, width: int, height: int, *, batch: int = 1,
                 model: str = "madebyollin/taesd", subfolder: str | None = None,
                 init_std: float = 1.0, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        import diffusers

        if not (init_std >= 0.0):
            raise ConfigError("init_std", f"must be >= 0, got {init_std!r}")
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
        self.latent = nn.Parameter(_randn(shape, generator, device) * init_std)

    def render(self) -> Tensor:
        """Decode the latent and map [-1, 1] to [0, 1]."""
        z = self.latent / self.scaling + self.shift
        x = self.vae.decode(z).sample
        return clamp_with_grad((x + 1) / 2)

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Set the latent to the encoder's code of ``image`` (1 or B, 3, H, W) in [0, 1]."""
        x = fit_image(image, self.height, self.width, self.latent) * 2 - 1
        enc = self.vae.encode(x)
        z = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode()
        self.latent.copy_(((z - self.shift) * self.scaling).expand_as(self.latent))
