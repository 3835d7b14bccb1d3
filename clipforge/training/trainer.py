"""Train a CLIP from captioned images with the contrastive objective (Radford et al. 2021).

The objective is CLIP's (:func:`~clipforge.training.losses.contrastive_loss`), with a learned
temperature (``logit_scale``, clamped to ln(100)); optionally on adversarial versions of the
images (:mod:`clipforge.training.adversarial`), which makes the model's gradients useful for
guidance.

:func:`train` is a library function: it prints nothing and draws no progress bar (DESIGN
rule 1); it calls ``callback(step, loss)`` after every step and front ends draw from that.
Its learning rate is the project's one schedule, :func:`clipforge.loop.lr_factor` (warm-up,
then cosine); its checkpoints go through :func:`clipforge.checkpoint.write_state` /
:func:`~clipforge.checkpoint.read_state`, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from clipforge.config import PRECISIONS
from clipforge.errors import ConfigError, DataError, NonFiniteLossError
from clipforge.loop import lr_factor
from clipforge.precision import autocast, resolve_precision
from clipforge.training.adversarial import Adversarial, attack
from clipforge.training.augment import Augment
from clipforge.training.losses import contrastive_loss
from clipforge.training.data import make_source
from clipforge.training.model_io import (build_model, default_preprocess, embedder_of,
                                         image_size_of, load_model_dir, resolve_config)
from clipforge.training.zeroshot import shapes_zero_shot

MAX_LOGIT_SCALE = math.log(100.0)
"""Upper clamp of the learned log-temperature, as in the CLIP paper."""

CHECKPOINT_FORMAT = "clipforge-training-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("model", "optimizer", "step", "rng")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (eval mode).
        model_cfg: its open_clip kwargs.
        step: steps done in total (including resumed ones).
        losses: loss per step of this run.
        seconds: wall time of this run.
        zero_shot: shapes val accuracies ({"colour", "shape", "colour+shape", "n"}) or None.
        logit_scale: final learned temperature (exponentiated).
        preprocess_cfg: open_clip's {"size", "mean", "std"} the model was trained with.
    """

    model: torch.nn.Module
    model_cfg: dict[str, Any]
    step: int
    losses: list[float]
    seconds: float
    zero_shot: dict[str, float] | None = None
    logit_scale: float = 0.0
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)

    def embedder(self):
        """A :class:`~clipforge.guidance.embedders.ClipEmbedder` over the trained model (not frozen)."""
        return embedder_of(self.model, self.model_cfg, self.preprocess_cfg)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups as open_clip's trainer makes them: no decay on gains, biases,
    norms, the token embedding and the temperature.

    Args:
        model: the model being trained.
        weight_decay: decay of the weight matrices.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "ln" in name or "bn" in name
         or "token_embedding" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a training checkpoint atomically (its folder is created).

    Args:
        path: the checkpoint file.
        state: {"model", "optimizer", "step", "rng", ...} as :func:`train` writes it.
    """
    from clipforge.checkpoint import write_state

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_state(path, {**state, "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``: no pickled code runs).

    Args:
        path: the checkpoint file (also one written before checkpoints carried a marker).

    Raises:
        DataError: the file is missing, unreadable, or not a training checkpoint.
    """
    from clipforge.checkpoint import read_state

    return read_state(path, format=CHECKPOINT_FORMAT, required=_REQUIRED,
                      version=CHECKPOINT_VERSION, unmarked=True,
                      error=lambda message: DataError(message, path))


def _check_args(steps: int, batch_size: int, lr: float, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    for name, v, lo in (("steps", steps, 1), ("batch_size", batch_size, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > 10**7:
            raise ConfigError(name, f"{v!r} is out of range; allowed: {lo} to 10000000")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= 10):
        raise ConfigError("lr", f"{lr!r} is out of range; allowed: > 0 and <= 10")


class _Tokens:
    """Token ids per caption, each caption tokenized once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if new:
            self.cache.update(zip(new, self.tokenizer(new)))
        return torch.stack([self.cache[c] for c in captions])


def train(data: str | os.PathLike, config: str | os.PathLike | Mapping[str, Any] = "shapes-vit-s",
          *, steps: int = 500, batch_size: int = 128, lr: float = 1e-3,
          weight_decay: float = 0.1, warmup: int | None = None, seed: int = 0,
          augment: Augment | None = Augment(), adversarial: Adversarial | None = None,
          init: str | os.PathLike | None = None, precision: str = "fp32",
          checkpoint: str | os.PathLike | None = None,
          checkpoint_every: int = 0, resume: str | os.PathLike | None = None,
          eval_n: int = 512, callback: Callable[[int, float], None] | None = None,
          device: str | torch.device = "cpu") -> TrainResult:
    """Train an open_clip CLIP contrastively (Radford et al. 2021) on captioned images.

    Args:
        data: ``"shapes"``, a folder of images + same-name ``.txt`` captions, or a .csv/.jsonl.
        config: model config (see :func:`~clipforge.training.model_io.resolve_config`).
        steps: total optimizer steps (a resumed run continues up to this number).
        batch_size: pairs per step (the N of the N x N similarity matrix).
        lr: peak AdamW learning rate (linear warm-up, then cosine decay to 0).
        weight_decay: AdamW weight decay on weight matrices.
        warmup: warm-up steps (default: 5% of steps).
        seed: seeds the model initialisation, the data and the augmentation generators.
        augment: training augmentation, or None for none.
        adversarial: train on adversarial versions of the (augmented) images, or None.
        init: a model saved by ``save_model`` (same config) to start from instead of random
            weights: fine-tuning, e.g. adversarially, as TeCoA and FARE fine-tune CLIP.
        precision: ``fp32`` (the bundled recipes' figures), ``bf16`` (autocast of the
            forward and loss; weights and optimizer state stay fp32) or ``auto`` (bf16 where the
            device has bf16 matrix units, :func:`clipforge.precision.resolve_precision`).
        checkpoint: where to save checkpoints (model, optimizer, step, RNG states).
        checkpoint_every: save every K steps (0: only at the end, if ``checkpoint`` is set).
        resume: a checkpoint to continue from (its step, optimizer and RNG states).
        eval_n: size of the shapes val split for the final zero-shot evaluation.
        callback: called as ``callback(step, loss)`` after every step (and its checkpoint);
            front ends draw progress from it.
        device: where to train (``auto``: CUDA when present). Checkpoints are read onto the
            CPU first, so a run resumes on another device than it started on; the random
            streams of data and augmentation stay on the CPU, so the batches are the same.

    Raises:
        ConfigError: bad arguments or model config; DataError: unusable data or checkpoint;
        NonFiniteLossError: the loss became NaN or infinite.
    """
    _check_args(steps, batch_size, lr, precision)
    model_cfg = resolve_config(config)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None and ckpt.get("model_cfg") not in (None, model_cfg):
        model_cfg = ckpt["model_cfg"]  # the checkpoint's architecture wins over the flag
    source = make_source(data, image_size_of(model_cfg), batch_size)

    with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG:
        torch.manual_seed(seed)              # seed it here without touching the caller's
        model = build_model(model_cfg)
    if init is not None and ckpt is None:
        model.load_state_dict(load_model_dir(init).model.state_dict())
    dev = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available() else
                       "cpu" if str(device) == "auto" else device)
    model.to(dev)
    pre = default_preprocess(model_cfg)
    embedder = embedder_of(model, model_cfg, pre)  # not frozen: resizes and normalizes only
    tokens = _Tokens(embedder.tokenizer)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    g_data = torch.Generator().manual_seed(seed * 2 + 1)
    g_aug = torch.Generator().manual_seed(seed * 2 + 2)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        g_data.set_state(ckpt["rng"]["data"])
        g_aug.set_state(ckpt["rng"]["augment"])
        start = int(ckpt["step"])
    warmup = max(1, steps // 20) if warmup is None else warmup
    amp = resolve_precision(precision, dev)

    def state(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "rng": {"data": g_data.get_state(), "augment": g_aug.get_state()},
                "model_cfg": model_cfg, "seed": seed, "data": str(data)}

    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for step in range(start, steps):
        batch = source.next(g_data)
        images = batch.images.to(dev)
        x = images if augment is None else augment(images, g_aug, batch.keep)
        for grp in opt.param_groups:
            grp["lr"] = lr * lr_factor(step, steps, warmup, "cosine")
        with autocast(amp, dev):
            if adversarial is not None:
                x = attack(adversarial, model, embedder, x, tokens(batch.captions).to(dev),
                           batch.match, g_aug)
            img = embedder.encode_image(x)
            txt = F.normalize(model.encode_text(tokens(batch.captions).to(dev)).float(), dim=-1)
            match = batch.match.to(dev) if batch.match is not None else None
            loss = contrastive_loss(img, txt, model.logit_scale.exp(), match)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(step + 1, f"loss became {value} at step {step + 1}; "
                                     "lower --lr")
        losses.append(value)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_checkpoint(checkpoint, state(step + 1))
        if callback is not None:
            callback(step + 1, value)
    done = max(start, steps)
    if checkpoint is not None:
        save_checkpoint(checkpoint, state(done))
    model.eval().to("cpu")  # results (and saving them, the zero-shot check) live on the CPU
    result = TrainResult(model, model_cfg, done, losses, time.perf_counter() - t0,
                         logit_scale=float(model.logit_scale.detach().exp()), preprocess_cfg=pre)
    if str(data) == "shapes" and eval_n:
        with torch.no_grad():
            result.zero_shot = shapes_zero_shot(result.embedder(), n=eval_n)
    return result


__all__ = ["MAX_LOGIT_SCALE", "contrastive_loss", "TrainResult", "param_groups",
           "save_checkpoint", "load_checkpoint", "train", "CHECKPOINT_FORMAT"]
