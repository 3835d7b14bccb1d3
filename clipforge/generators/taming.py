"""taming-transformers VQGAN checkpoints (``.ckpt`` + ``.yaml``) -> diffusers ``VQModel`` folders.

The VQGAN+CLIP notebooks used taming-transformers checkpoints; the ``vqgan`` generator loads
diffusers ``VQModel`` folders. This converts one into the other once: the yaml's ``ddconfig``
becomes a VQModel config, the state dict's names are mapped to diffusers' (1x1 attention
convolutions become linear layers), and the result is written with ``save_pretrained`` into a
folder that appears whole or not at all (:func:`clipforge.outputs.atomic_dir`). The checkpoint
is read without running code from it: PyTorch Lightning's pickled classes are replaced by inert
stand-ins. Kept apart from :mod:`clipforge.generators.vqgan` because it is a one-off tool with
its own dependencies (yaml), not part of rendering.
Origin: Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from clipforge.errors import ConfigError, WeightsError, first_line
from clipforge.outputs import atomic_dir
from clipforge.weights import load_state_dict, sniff_format, torch_load

_RENAMES = [  # taming name piece -> diffusers name piece, inside one block
    (r"\.nin_shortcut\.", ".conv_shortcut."), (r"\.norm\.", ".group_norm."),
    (r"\.q\.", ".to_q."), (r"\.k\.", ".to_k."), (r"\.v\.", ".to_v."),
    (r"\.proj_out\.", ".to_out.0."),
]


def taming_config_to_diffusers(params: dict) -> dict:
    """diffusers ``VQModel`` config from the ``model.params`` of a taming VQGAN yaml.

    Args:
        params: the yaml's ``model.params`` (``ddconfig``, ``embed_dim``, ``n_embed``).

    Raises:
        ConfigError: a layout diffusers' VQModel cannot express (``ch_mult[0] != 1``, double z).
    """
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
    """Rename a taming ``VQModel`` state dict to diffusers' ``VQModel`` names (loss.* dropped).

    Args:
        sd: the checkpoint's state dict.
        levels: resolution levels (``len(ch_mult)``): taming numbers decoder levels upward.

    Shape:
        attention 1x1 convolution weights (O, I, 1, 1) become linear weights (O, I); every
        other tensor is passed as it is.
    """
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
    the file is ever run. A zip checkpoint lists them up front; a legacy (non-zip) one names
    them one refusal at a time.
    """
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return load_state_dict(path)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) \
        if fmt == "torch-zip" else []
    tried = set(names)
    stubs = [_inert(full) for full in names]
    while True:
        try:
            with torch.serialization.safe_globals(stubs):
                ckpt = torch_load(path)
            break
        except Exception as e:  # noqa: BLE001 - unpickling refused, corrupt file
            m = _UNSUPPORTED.search(str(e))
            if m is None or m.group(1) in tried or len(tried) >= _MAX_STUBS:
                raise WeightsError(f"cannot load checkpoint {str(path)!r}: "
                                   f"{first_line(e, 300)}") from None
            tried.add(m.group(1))
            stubs.append(_inert(m.group(1)))
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"checkpoint {str(path)!r} holds no state dict")
    return sd


_MAX_STUBS = 64  # a Lightning checkpoint pickles a handful of classes beside its weights
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class _Inert:
    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert(full: str) -> type:
    """An empty class named ``full`` (module.Name) that torch may unpickle in its place."""
    module, _, name = full.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


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
    import yaml
    from diffusers import VQModel

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
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
    return out
