"""A lean frozen ResNet image tower: batch norms folded into their convolutions, channels-last.

A frozen guide runs open_clip's ``ModifiedResNet`` in eval mode, where every ``BatchNorm2d``
is a fixed per-channel scale and shift: folding it into the convolution before it (the usual
inference fusion, ``torch.nn.utils.fusion.fuse_conv_bn_eval``) gives the same maths with one op
fewer per layer in the forward AND the backward, where the image gradient is computed. The
tower then runs channels-last, oneDNN's native layout. Results agree with open_clip's to float
rounding (``tests/test_precision.py``).
Origin: open_clip's ``ModifiedResNet`` (after OpenAI CLIP's RN50).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def is_open_clip_resnet(visual: nn.Module | None) -> bool:
    """True for open_clip's ``ModifiedResNet`` tower, whose conv -> bn pairs are known."""
    if visual is None or not type(visual).__module__.startswith("open_clip"):
        return False
    try:
        from open_clip.modified_resnet import ModifiedResNet
    except ImportError:
        return False
    return type(visual) is ModifiedResNet


def _fuse_children(module: nn.Module) -> int:
    """Fold ``bnK`` into ``convK`` (stem, bottlenecks) and a Sequential's conv -> bn pairs
    (downsample branches), recursively; returns how many pairs were folded."""
    n = 0
    for k in range(1, 4):
        conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, f"conv{k}", fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{k}", nn.Identity())
            n += 1
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
                n += 1
    for child in module.children():
        n += _fuse_children(child)
    return n


@torch.no_grad()
def make_lean(visual: nn.Module) -> nn.Module:
    """Fold the batch norms of a frozen (eval-mode) open_clip ResNet tower into its
    convolutions and make it channels-last, in place; returns the tower."""
    _fuse_children(visual.eval())
    return visual.requires_grad_(False).to(memory_format=torch.channels_last)


__all__ = ["is_open_clip_resnet", "make_lean"]
