"""VQGAN generator: optimize the continuous latent of a diffusers ``VQModel``; decode via codes.

At every render the latent is snapped to its nearest codebook vectors with a straight-through
gradient (the forward pass sees the codes, the backward pass treats the snap as identity), as
the VQGAN+CLIP notebooks did; ``quantize=False`` decodes the continuous latent instead
(smoother, but off the decoder's training distribution). The initial latent is a grid of random
codes. Any diffusers-format ``VQModel`` loads (hub id, local folder, ``subfolder``); a
taming-transformers checkpoint (``.ckpt`` + ``.yaml``) is converted once with
:func:`convert_taming_checkpoint`.
Origin: Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis";
VQGAN+CLIP, Crowson et al. 2022, "VQGAN-CLIP: Open Domain Image Generation and Editing with
Natural Language Guidance".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from clipforge.config import ConfigError
from clipforge.generators.clamp import clamp_with_grad
from clipforge.generators.draw import randint
from clipforge.generators.hub import check_factor, load_diffusers_model, read_model_config
from clipforge.images import fit_image


def quantize_straight_through(z: Tensor, codebook: Tensor) -> Tensor:
    """Replace each latent vector by its nearest code; the gradient passes through unchanged.

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
        model: diffusers hub id or local folder of a ``VQModel``.
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

    def __init__(self, width: int, height: int, *, batch: int = 1,
                 model: str = "microsoft/vq-diffusion-ithq", subfolder: str | None = "vqvae",
                 quantize: bool = True, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        from diffusers import VQModel

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
        """Quantize (optionally), decode and map [-1, 1] to [0, 1]."""
        z = self.latent
        if self.quantize:
            z = quantize_straight_through(z, self.vq.quantize.embedding.weight)
        h = self.vq.post_quant_conv(z)
        x = self.vq.decoder(h, z if self.vq.config.norm_type == "spatial" else None)
        return clamp_with_grad((x + 1) / 2)

    forward = render

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Set the latent to the encoder's (unquantized) code of ``image`` in [0, 1]."""
        x = fit_image(image, self.height, self.width, self.latent) * 2 - 1
        self.latent.copy_(self.vq.encode(x).latents.expand_as(self.latent))


# ---------------------------------------------------------------------------------------------
# taming-transformers checkpoints -> diffusers VQModel folders

_RENAMES = [  # taming name piece -> diffusers name piece, inside one block
    (r"\.nin_shortcut\.", ".conv_shortcut."), (r"\.norm\.", ".group_norm."),
    (r"\.q\.", ".to_q."), (r"\.k\.", ".to_k."), (r"\.v\.", ".to_v."),
    (r"\.proj_out\.", ".to_out.0."),
]


def taming_config_to_diffusers(params: dict) -> dict:
    """diffusers ``VQModel`` config from the ``model.params`` of a taming VQGAN yaml."""
    dd = params["ddconfig"]
    ch, mult, res, attn = dd["ch"], list(dd["ch_mult"]), dd["resolution"], dd["attn_resolutions"]
    if mult[0] != 1 or dd.get("double_z", False):
        raise ConfigError("yaml", "only VQGAN configs with ch_mult[0] == 1 and double_z false "
                          "convert to a diffusers VQModel")
    levels = len(mult)
    has_attn = [res // 2 ** i in attn for i in range(levels)]
    return {
        "in_channels": dd["in_channels"], "out_channels": dd["out_ch"],
        "block_out_channels": [ch * m for m in mult], "layers_per_block": dd["num_res_blocks"],
        "down_block_types": ["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D"
                             for a in has_attn],
        "up_block_types": ["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D"
                           for a in reversed(has_attn)],
        "latent_channels": dd["z_channels"], "vq_embed_dim": params["embed_dim"],
        "num_vq_embeddings": params["n_embed"], "norm_num_groups": 32, "sample_size": res,
        "scaling_factor": 1.0,
    }


def taming_state_dict_to_diffusers(sd: dict[str, Tensor], levels: int) -> dict[str, Tensor]:
    """Rename a taming ``VQModel`` state dict to diffusers' ``VQModel`` names (loss.* dropped)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("loss."):
            continue  # the discriminator and perceptual loss of training
        k = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
        k = re.sub(r"^encoder\.down\.(\d+)\.attn\.", r"encoder.down_blocks.\1.attentions.", k)
        k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.",
                   r"encoder.down_blocks.\1.downsamplers.0.", k)
        m = re.match(r"^decoder\.up\.(\d+)\.(block|attn|upsample)\.(.*)$", k)
        if m:
            part = {"block": "resnets.", "attn": "attentions.", "upsample": "upsamplers.0."}
            k = f"decoder.up_blocks.{levels - 1 - int(m[1])}.{part[m[2]]}{m[3]}"
        k = re.sub(r"\.mid\.block_(\d)\.", lambda g: f".mid_block.resnets.{int(g[1]) - 1}.", k)
        k = k.replace(".mid.attn_1.", ".mid_block.attentions.0.")
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", k)
        if "attentions." in k:
            for pat, rep in _RENAMES[1:]:
                k = re.sub(pat, rep, k)
            if value.dim() == 4 and not k.endswith("group_norm.weight"):
                value = value[:, :, 0, 0]  # 1x1 convolutions become linear layers
        k = re.sub(_RENAMES[0][0], _RENAMES[0][1], k)
        out[k] = value
    return out


def _load_checkpoint_without_code(path: Path) -> dict:
    """A Lightning ``.ckpt``'s state dict, with unknown classes replaced by inert stand-ins.

    ``torch.load(weights_only=True)`` refuses the Lightning callback and hyper-parameter
    classes pickled beside the weights; they are mapped to empty classes here, so nothing from
    the file is ever run.
    """
    from clipforge.weights import WeightsError, load_state_dict, sniff_format

    if sniff_format(path) == "safetensors":
        return load_state_dict(path)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))

    class _Inert:
        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

    stubs = []
    for full in names:
        module, _, name = full.rpartition(".")
        stubs.append(type(name, (_Inert,), {"__module__": module, "__qualname__": name}))
    try:
        with torch.serialization.safe_globals(stubs):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot load checkpoint {str(path)!r}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:300]}") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"checkpoint {str(path)!r} holds no state dict")
    return sd


def convert_taming_checkpoint(ckpt: str | os.PathLike, config: str | os.PathLike,
                              out_dir: str | os.PathLike) -> Path:
    """Convert a taming-transformers VQGAN (``.ckpt`` + ``.yaml``) to a diffusers VQModel folder.

    Args:
        ckpt: the checkpoint (e.g. ``vqgan_imagenet_f16_16384.ckpt``); loaded without running
            code from it.
        config: its yaml (``model.target`` ``taming.models.vqgan.VQModel``).
        out_dir: folder to create (must not exist); written beside it first, then renamed.

    Returns:
        ``out_dir``, loadable with ``generator_options={"model": out_dir, "subfolder": None}``.
    """
    import tempfile

    import yaml
    from diffusers import VQModel

    from clipforge.weights import WeightsError

    out = Path(out_dir)
    if out.exists():
        raise ConfigError("out_dir", f"{str(out)!r} already exists; choose a new folder")
    try:
        cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        target, params = cfg["model"]["target"], cfg["model"]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError("yaml", f"cannot read a taming model config from {str(config)!r}: "
                          f"{type(e).__name__}: {e}") from None
    if target.rpartition(".")[2] != "VQModel":
        raise ConfigError("yaml", f"{target!r} is not supported; only taming.models.vqgan."
                          "VQModel converts (not GumbelVQ or the transformer models)")
    dcfg = taming_config_to_diffusers(params)
    try:
        sd = _load_checkpoint_without_code(Path(ckpt))
    except WeightsError as e:
        raise ConfigError("ckpt", str(e)) from None
    sd = taming_state_dict_to_diffusers(sd, len(dcfg["block_out_channels"]))
    model = VQModel(**dcfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ConfigError("ckpt", f"{str(ckpt)!r} does not match {str(config)!r}: "
                          f"{' '.join(str(e).split())[:400]}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:80]}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
