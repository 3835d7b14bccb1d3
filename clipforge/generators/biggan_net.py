"""The BigGAN-deep network, written here, and loading the widely used PyTorch release of it.

No well-kept library ships BigGAN-deep (``pytorch_pretrained_biggan`` is unmaintained since
2019 and loads its weights with an unrestricted ``torch.load``), so the network is written here,
from the paper and the layout of the widely used PyTorch release of DeepMind's TF-Hub weights
(128/256/512 px): a folder with ``config.json`` (``output_dim``, ``z_dim``, ``class_embed_dim``,
``channel_width``, ``num_classes``, ``layers`` = ``[up?, in_mult, out_mult]`` per block,
``attention_layer_position``, ``eps``, ``n_stats``) and ``pytorch_model.bin`` whose module names
this file mirrors. The release stores spectral-norm tensors (``weight_orig``, ``weight_u``,
``weight_v``); they are folded once at load time into plain weights, exactly as PyTorch's
``spectral_norm`` computes them in eval mode: ``W = weight_orig / (u . (W_mat v))``.
Kept apart from :mod:`clipforge.generators.biggan` (what is optimized and how) because the
network is a model definition with its own file format, as diffusers keeps models apart from
pipelines.
Origin: Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis";
self-attention from SAGAN (Zhang et al. 2019).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.errors import ConfigError, WeightsError
from clipforge.generators.hub import hub_file, is_local_path
from clipforge.weights import load_state_dict

CONFIG_NAME, WEIGHTS_NAME = "config.json", "pytorch_model.bin"
_CONFIG_KEYS = ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes",
                "layers", "attention_layer_position", "eps", "n_stats")


class _Norm(nn.Module):
    """Batch norm with stored statistics per truncation value, class-conditional or not."""

    def __init__(self, channels: int, cond_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        if cond_dim is not None:
            self.scale = nn.Linear(cond_dim, channels, bias=False)
            self.offset = nn.Linear(cond_dim, channels, bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, stats: tuple[int, int, float], cond: Tensor | None) -> Tensor:
        i0, i1, frac = stats
        mean = torch.lerp(self.running_means[i0], self.running_means[i1], frac)[:, None, None]
        var = torch.lerp(self.running_vars[i0], self.running_vars[i1], frac)[:, None, None]
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if cond is None:
            return x * self.weight[:, None, None] + self.bias[:, None, None]
        return x * (1 + self.scale(cond)[:, :, None, None]) + self.offset(cond)[:, :, None, None]


class _Block(nn.Module):
    """Bottleneck residual block of BigGAN-deep: 1x1 down, two 3x3, 1x1 up; optional 2x upsample."""

    def __init__(self, cin: int, cout: int, cond_dim: int, up: bool, n_stats: int, eps: float):
        super().__init__()
        mid = cin // 4
        self.up, self.cout = up, cout
        self.bn_0, self.conv_0 = _Norm(cin, cond_dim, n_stats, eps), nn.Conv2d(cin, mid, 1)
        self.bn_1, self.conv_1 = _Norm(mid, cond_dim, n_stats, eps), nn.Conv2d(mid, mid, 3, 1, 1)
        self.bn_2, self.conv_2 = _Norm(mid, cond_dim, n_stats, eps), nn.Conv2d(mid, mid, 3, 1, 1)
        self.bn_3, self.conv_3 = _Norm(mid, cond_dim, n_stats, eps), nn.Conv2d(mid, cout, 1)

    def forward(self, x: Tensor, cond: Tensor, stats) -> Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, stats, cond)))
        h = F.relu(self.bn_1(h, stats, cond))
        if self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv_2(F.relu(self.bn_2(self.conv_1(h), stats, cond)))
        h = self.conv_3(F.relu(self.bn_3(h, stats, cond)))
        return h + x[:, :self.cout]  # the skip path drops channels when the block narrows


class _SelfAttn(nn.Module):
    """Self-attention of SAGAN (Zhang et al. 2019) with 2x2 max-pooled keys and values."""

    def __init__(self, ch: int):
        super().__init__()
        self.snconv1x1_theta = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.snconv1x1_phi = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.snconv1x1_g = nn.Conv2d(ch, ch // 2, 1, bias=False)
        self.snconv1x1_o_conv = nn.Conv2d(ch // 2, ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        theta = self.snconv1x1_theta(x).flatten(2)                      # (B, C/8, HW)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2)         # (B, C/8, HW/4)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2)             # (B, C/2, HW/4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)       # (B, HW, HW/4)
        out = (g @ attn.transpose(1, 2)).view(b, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class _Generator(nn.Module):
    """The release's ``generator``: linear to 4x4, the blocks (attention at one), BN, to RGB."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        ch, cond_dim = cfg["channel_width"], cfg["z_dim"] + cfg["class_embed_dim"]
        self.c0 = cfg["layers"][0][1] * ch
        self.gen_z = nn.Linear(cond_dim, 4 * 4 * self.c0)
        layers: list[nn.Module] = []
        for i, (up, cin, cout) in enumerate(cfg["layers"]):
            if i == cfg["attention_layer_position"]:
                layers.append(_SelfAttn(cin * ch))
            layers.append(_Block(cin * ch, cout * ch, cond_dim, bool(up), cfg["n_stats"],
                                 cfg["eps"]))
        self.layers = nn.ModuleList(layers)
        self.bn = _Norm(ch, None, cfg["n_stats"], cfg["eps"])
        self.conv_to_rgb = nn.Conv2d(ch, ch, 3, 1, 1)  # the release keeps ch outputs, uses 3

    def forward(self, cond: Tensor, stats) -> Tensor:
        # the TF weights lay the 4x4 map out channels-last
        h = self.gen_z(cond).view(-1, 4, 4, self.c0).permute(0, 3, 1, 2)
        for layer in self.layers:
            h = layer(h, cond, stats) if isinstance(layer, _Block) else layer(h)
        h = F.relu(self.bn(h, stats, None))
        rgb = F.conv2d(h, self.conv_to_rgb.weight[:3], self.conv_to_rgb.bias[:3], padding=1)
        return torch.tanh(rgb)


class BigGANDeep(nn.Module):
    """The BigGAN-deep generator network with the release's module names.

    Args:
        config: the release's ``config.json`` as a dict (see the module docstring).

    Shape:
        forward(z (B, z_dim), classes (B, num_classes), truncation) -> (B, 3, R, R) in [-1, 1],
        R = ``output_dim``.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = validate_config(config)
        self.embeddings = nn.Linear(config["num_classes"], config["class_embed_dim"], bias=False)
        self.generator = _Generator(config)

    def stats_index(self, truncation: float) -> tuple[int, int, float]:
        """Where ``truncation`` falls on the grid of stored statistics (index, next, fraction).

        Args:
            truncation: in (0, 1].

        On the grid this is the release's choice exactly; between grid points the statistics
        are interpolated linearly.
        """
        pos = truncation * (self.config["n_stats"] - 1)
        i0 = min(int(pos), self.config["n_stats"] - 1)
        return i0, min(i0 + 1, self.config["n_stats"] - 1), float(pos - i0)

    def forward(self, z: Tensor, classes: Tensor, truncation: float) -> Tensor:
        """Generate images from latents and class vectors.

        Args:
            z: latents (truncated normal times ``truncation`` as BigGAN samples them).
            classes: class vectors (one-hot or soft, summing to 1).
            truncation: in (0, 1]; picks the stored batch-norm statistics.

        Shape:
            z (B, z_dim), classes (B, num_classes) -> (B, 3, R, R) in [-1, 1].
        """
        cond = torch.cat([z, self.embeddings(classes)], dim=1)
        return self.generator(cond, self.stats_index(truncation))


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a BigGAN ``config.json`` dict and return it; ConfigError naming the first bad key.

    Args:
        cfg: the release's config (see the module docstring for its keys).
    """
    missing = [k for k in _CONFIG_KEYS if k not in cfg]
    if missing:
        raise ConfigError("model", f"BigGAN config.json lacks {', '.join(missing)}")
    layers = cfg["layers"]
    if not layers or any(len(l) != 3 or l[2] > l[1] for l in layers):
        raise ConfigError("model", "BigGAN config.json: layers must be [up, in, out] with "
                          f"out <= in, got {layers!r}")
    size = 4 * 2 ** sum(bool(l[0]) for l in layers)
    if size != cfg["output_dim"]:
        raise ConfigError("model", f"BigGAN config.json: layers make {size} px but output_dim "
                          f"is {cfg['output_dim']}")
    return cfg


def fold_spectral_norm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every ``X.weight_orig/_u/_v`` triple by ``X.weight = weight_orig / sigma``.

    ``sigma = u . (W v)`` with W the weight flattened to (out, -1): what
    ``torch.nn.utils.spectral_norm`` uses in eval mode (no power iteration).

    Args:
        state_dict: the release's weights.

    Shape:
        ``weight_orig`` (out, ...) with ``weight_u`` (out,) and ``weight_v`` (in,) -> ``weight``
        shaped like ``weight_orig``; other tensors unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        if key.endswith(".weight_orig"):
            base = key[: -len("_orig")]
            u, v = state_dict.get(base + "_u"), state_dict.get(base + "_v")
            if u is None or v is None:
                raise ConfigError("model", f"BigGAN weights: {key} has no {base}_u/_v pair")
            w = value.float()
            sigma = torch.dot(u.float(), w.reshape(w.shape[0], -1) @ v.float())
            out[base] = (w / sigma).to(value.dtype)
        else:
            out[key] = value
    return out


def _release_file(model: str, name: str) -> Path:
    """One file of a release: from a local folder, or from the hub (with the offline hint)."""
    if not is_local_path(model):
        return hub_file(model, name, what="BigGAN", files=f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    path = Path(model).expanduser() / name
    if not path.is_file():
        raise ConfigError("model", f"BigGAN folder {str(path.parent)!r} has no {name} "
                          f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    return path


def read_config(model: str) -> dict[str, Any]:
    """The checked ``config.json`` of a release (hub id or folder), read before any weights.

    Args:
        model: hub id (``org/name``) or local folder.

    Raises:
        ConfigError: on ``model``, for a missing, unreadable or inconsistent config.
    """
    cfg_file = _release_file(model, CONFIG_NAME)
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError("model", f"cannot read {str(cfg_file)!r}: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError("model", f"{str(cfg_file)!r} does not hold a JSON object")
    return validate_config(config)


def load_biggan(model: str, device: str | torch.device = "cpu",
                config: dict[str, Any] | None = None) -> BigGANDeep:
    """Load a BigGAN-deep release (hub id or folder) as a frozen :class:`BigGANDeep`.

    Args:
        model: hub id (``org/name``) or local folder with ``config.json`` and
            ``pytorch_model.bin``.
        device: where the network lives.
        config: its config when already read with :func:`read_config` (read here otherwise).

    Raises:
        ConfigError: on ``model``, when the weights are unreadable or do not match the config.
    """
    net = BigGANDeep(config if config is not None else read_config(model))
    weights_file = _release_file(model, WEIGHTS_NAME)
    try:
        sd = fold_spectral_norm(load_state_dict(weights_file))
    except WeightsError as e:
        raise ConfigError("model", str(e)) from None
    try:
        result = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError("model", f"BigGAN weights {str(weights_file)!r} do not match its "
                          f"config: {str(e).splitlines()[-1].strip()[:300]}") from None
    if result.missing_keys:
        raise ConfigError("model", f"BigGAN weights {str(weights_file)!r} do not match its "
                          f"config: missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        warnings.warn(f"BigGAN weights: ignored {len(result.unexpected_keys)} unexpected keys "
                      f"({', '.join(result.unexpected_keys[:3])}, ...)", stacklevel=2)
    return net.to(device).eval().requires_grad_(False)
