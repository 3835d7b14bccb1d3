"""BigGAN-deep generator: optimize a latent z and a soft class vector of a pretrained BigGAN.

The parameters are z (a truncated normal at the start) and logits over the classes, whose
softmax (optionally over the top k only) is the class vector fed to the network of
:mod:`clipforge.generators.biggan_net`. Classes may be named by ImageNet name.

BigGAN has no encoder, so this generator has no ``init_from``: a run with an init image fails
before starting with "generator 'biggan' cannot start from an image".
Origin: Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis";
CLIP guidance of BigGAN as in big-sleep (Wang 2021).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.generators.biggan_net import load_biggan, read_config
from clipforge.generators.draw import randn


def class_indices(classes: Sequence[int | str], num_classes: int) -> list[int]:
    """Class indices from ints or ImageNet names (case-insensitive, as in open_clip's list).

    Args:
        classes: indices in ``0..num_classes - 1``, or ImageNet class names (1000-class models).
        num_classes: the model's number of classes.

    Raises:
        ConfigError: on ``classes``, naming close ImageNet names for an unknown one.
    """
    out = []
    for c in classes:
        if isinstance(c, int) and not isinstance(c, bool):
            if not 0 <= c < num_classes:
                raise ConfigError("classes", f"class index {c} is outside 0..{num_classes - 1}")
            out.append(c)
            continue
        if not isinstance(c, str) or num_classes != 1000:
            raise ConfigError("classes", f"{c!r}: give class indices 0..{num_classes - 1}"
                              + (" or ImageNet class names" if num_classes == 1000 else ""))
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        names = [n.lower() for n in IMAGENET_CLASSNAMES]
        if c.strip().lower() not in names:
            close = [n for n in IMAGENET_CLASSNAMES if c.strip().lower() in n.lower()][:5]
            raise ConfigError("classes", f"unknown ImageNet class {c!r}"
                              + (f"; did you mean: {', '.join(close)}" if close else ""))
        out.append(names.index(c.strip().lower()))
    return out


class BigGANGenerator(nn.Module):
    """RGB image in [0, 1] from BigGAN-deep, steered through z and a soft class vector.

    Args:
        width: image width; must equal the model's ``output_dim`` (128, 256 or 512).
        height: image height; same.
        batch: images rendered at once.
        model: hub id or local folder holding ``config.json`` and ``pytorch_model.bin``.
        truncation: in (0, 1]; the initial z is a normal truncated to [-2, 2] times this, and
            the batch-norm statistics stored for this value are used.
        classes: class indices or ImageNet names to start from (empty: a random mixture).
        top_k: if set, the softmax is taken over the k largest class logits only.
        generator: ``torch.Generator`` for the initial z and class logits.
        device: where the parameters and the network live.

    Shape:
        render() -> (batch, 3, output_dim, output_dim) in [0, 1].
    """

    size_multiple = 1  # the one allowed size depends on the model; checked in the constructor
    option_rules = {"truncation": {"min_exclusive": 0, "max": 1},
                    "top_k": {"type": int, "min": 1}}  # at most the model's classes: checked later

    def __init__(self, width: int, height: int, *, batch: int = 1,
                 model: str = "osanseviero/BigGAN-deep-128", truncation: float = 0.4,
                 classes: Sequence[int | str] = (), top_k: int | None = None,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        if not (isinstance(truncation, (int, float)) and 0.0 < truncation <= 1.0):
            raise ConfigError("truncation", f"must be in (0, 1], got {truncation!r}")
        if isinstance(classes, (str, int)):
            classes = [classes]
        cfg = read_config(model)
        res, n = cfg["output_dim"], cfg["num_classes"]
        if (width, height) != (res, res):
            raise ConfigError("size", f"{width}x{height}: generator 'biggan' with this model "
                              f"makes {res}x{res} only; nearest allowed: {res}x{res}")
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= n):
            raise ConfigError("top_k", f"must be an integer in 1..{n} or None, got {top_k!r}")
        chosen = class_indices(classes, n)
        self.net = load_biggan(model, device, cfg)
        self.truncation, self.top_k = float(truncation), top_k
        z = randn((batch, cfg["z_dim"]), generator, device)
        while (bad := z.abs() > 2).any():  # resample outside [-2, 2]: a truncated normal
            z = torch.where(bad, randn(z.shape, generator, device), z)
        logits = randn((batch, n), generator, device)
        if chosen:  # the chosen classes share ~95% of the probability mass
            logits = logits * 0.1
            logits[:, chosen] += torch.log(torch.tensor(19.0 * n / len(chosen)))
        self.z = nn.Parameter(z * truncation)
        self.class_logits = nn.Parameter(logits)

    def class_probs(self) -> Tensor:
        """Softmax of the class logits (over the top k only when ``top_k`` is set).

        Shape:
            () -> (batch, num_classes) in [0, 1], each row summing to 1.
        """
        logits = self.class_logits
        if self.top_k is not None:
            kth = logits.topk(self.top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=1)

    def render(self) -> Tensor:
        """Run the generator on (z, class probabilities) and map [-1, 1] to [0, 1].

        Shape:
            () -> (batch, 3, output_dim, output_dim) in [0, 1].
        """
        return (self.net(self.z, self.class_probs(), self.truncation) + 1) / 2

    forward = render
