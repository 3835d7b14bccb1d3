"""Noise-optimization generator: a diffusion model as a differentiable image generator.

The parameter is the sampler's starting noise (and, optionally, the noise a stochastic DDIM
injects at each step); ``render()`` runs a short deterministic DDIM sampler from it (1-8 steps,
"trailing" timesteps, so one step starts from pure noise as SD-Turbo does) and decodes, all
differentiable, so the loop optimizes the noise against the guide. The model is the prior:
whatever the noise, the image is one the model can make. A chi-norm prior (the log-likelihood
of the noise's norm under the Gaussian) and an optional re-projection to the typical shell keep
the noise a plausible sample. Origin: ReNO (Eyring et al., NeurIPS 2024: starting noise of
one-step models, the norm prior, the best iterate kept), DNO (Tang et al., ICML 2025: every
injected noise of a multi-step sampler), DOODL (Wallace et al., ICCV 2023: end to end through
the sampler). Gradient checkpointing over the sampler steps trades compute for memory.

Models: the bundled ``shapes-ddpm`` (pixel space, offline), any diffusers ``UNet2DModel``
pipeline, and Stable Diffusion 1/2-format latent pipelines (SD-Turbo style included), with an
``AutoencoderTiny`` (TAESD) decoder where given; loading is
:func:`clipforge.generators.diffusion_models.load_pipeline`, shared with ``diffusion``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import torch
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.fields import check_field
from clipforge.generators.clamp import clamp_with_grad
from clipforge.generators.diffusion_models import (DTYPES, eps_from_output, load_pipeline,
                                                   make_scheduler, prompt_texts, text_states)
from clipforge.generators.draw import randn

MAX_SAMPLER_STEPS = 50


@dataclass(frozen=True)
class _Checked:
    """Type and range of each simple option, in the form :func:`check_field` reads (the
    defaults live once, in ``NoiseGenerator``'s signature, where the registry reads them)."""

    sampler_steps: int = field(default=0, metadata={"min": 1, "max": MAX_SAMPLER_STEPS})
    eta: float = field(default=0.0, metadata={"min": 0, "max": 1})
    step_noise: bool = False
    prior_weight: float = field(default=0.0, metadata={"min": 0, "max": 1e6})
    reproject: bool = False
    checkpointing: bool = False
    cfg_scale: float = field(default=0.0, metadata={"min": 0, "max": 100})
    dtype: str = field(default="", metadata={"choices": DTYPES})


def chi_nll(noise: Tensor) -> Tensor:
    """Negative log-likelihood of each sample's norm under the chi distribution of its size,
    shifted so that its minimum (at norm ``sqrt(d - 1)``) is 0: ReNO's norm regularizer.

    For a standard normal in ``d`` dimensions the norm ``r`` has density proportional to
    ``r**(d-1) exp(-r**2 / 2)``. Near the mode this is about ``d (rho - 1)**2`` with
    ``rho = r / sqrt(d - 1)``, and its gradient on each element is ``z (1 - (d - 1) / r**2)``:
    the same pull per element whatever the noise's size.

    Shape:
        noise (B, ...) -> (B,), >= 0.
    """
    k = max(noise[0].numel() - 1, 1)
    r2 = noise.flatten(1).float().square().sum(1)
    return -(k / 2) * torch.log(r2 / k) + (r2 - k) / 2


class NoiseGenerator(nn.Module):
    """An image made by a short DDIM run from an optimized noise; a Generator.

    Args:
        width: image width in pixels (a multiple of the model's stride).
        height: image height in pixels.
        batch: images rendered at once.
        model: ``shapes-ddpm`` (bundled), a hub id or a local diffusers folder.
        sampler_steps: DDIM steps of each render (1-8 is the useful range; 1 for one-step
            models such as SD-Turbo).
        eta: DDIM's injected noise (0 = deterministic); the injected noises are drawn once, so
            a render is deterministic either way.
        step_noise: optimize the injected noises too (DNO); needs ``eta`` > 0 and 2+ steps.
        prior_weight: weight of the chi-norm prior on every optimized noise (0 = off).
        reproject: after each optimizer step, scale every noise back to norm ``sqrt(d)``.
        checkpointing: recompute each sampler step in the backward pass (gradient
            checkpointing): memory of one step instead of all, at about one more forward.
        text: a latent model's own prompt (default: the run's positive prompts).
        negative_text: its negative prompt (default: the run's negative prompts).
        cfg_scale: its classifier-free guidance scale (1 = none, as one-step models want).
        decoder: an ``AutoencoderTiny`` (TAESD) that decodes instead of the model's VAE.
        dtype: ``auto`` (bfloat16 on CUDA, float32 elsewhere), ``float32`` or ``bfloat16``.
        generator: the source of the starting noise (and of the injected noises).
        device: where the noise and the models live.

    Shape:
        render() -> (batch, 3, height, width) in [0, 1].
    """

    size_multiple = 1  # the real stride depends on the model; checked once its config is read

    def __init__(self, width: int, height: int, *, batch: int = 1, model: str = "shapes-ddpm",
                 sampler_steps: int = 4, eta: float = 0.0, step_noise: bool = False,
                 prior_weight: float = 1.0, reproject: bool = False,
                 checkpointing: bool = False, text: str | None = None,
                 negative_text: str | None = None, cfg_scale: float = 1.0,
                 decoder: str | None = None, dtype: str = "auto",
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        simple = dict(sampler_steps=sampler_steps, eta=eta, step_noise=step_noise,
                      prior_weight=prior_weight, reproject=reproject, checkpointing=checkpointing,
                      cfg_scale=cfg_scale, dtype=dtype)
        for f in fields(_Checked):
            check_field(f, simple[f.name])
        for name, value in (("model", model), ("decoder", decoder), ("text", text),
                            ("negative_text", negative_text)):
            if value is not None and not isinstance(value, str) or (name == "model" and not value):
                raise ConfigError(name, f"expected text, got {value!r}")
        if step_noise and not (eta > 0 and sampler_steps >= 2):
            raise ConfigError("step_noise", "optimizing the injected noises needs eta > 0 and "
                              f"sampler_steps >= 2 (got eta={eta!r}, sampler_steps="
                              f"{sampler_steps!r})")
        dev = torch.device(device)
        self.dtype = (torch.bfloat16 if dev.type == "cuda" else torch.float32) \
            if dtype == "auto" else getattr(torch, dtype)
        self.prior_weight, self.reproject = float(prior_weight), bool(reproject)
        self.checkpointing, self.cfg_scale, self.eta = bool(checkpointing), float(cfg_scale), eta
        self.text, self.negative_text, self.batch = text, negative_text, batch
        parts = load_pipeline(model, decoder, width, height, self.dtype, generator="noise")
        for m in (parts.get(k) for k in ("unet", "vae", "decoder", "text_encoder")):
            if m is not None:
                m.to(dev).eval().requires_grad_(False)
        # a plain dict: the models are not submodules, so parameters() and state_dict() (what
        # the optimizer and a checkpoint hold) are the noises alone
        self.parts = parts
        self.latent = "vae" in parts
        self.sched = make_scheduler("ddim", dict(parts["scheduler"]))
        self.sched.set_timesteps(sampler_steps)
        # plain ints: the scheduler's `prev_timestep >= 0` then costs no host sync on CUDA
        self.timesteps = [int(t) for t in self.sched.timesteps]
        self.prediction = parts["scheduler"].get("prediction_type", "epsilon")
        c, f = parts["unet"].config.in_channels, parts["factor"]
        shape = (batch, c, height // f, width // f)
        self.noise = nn.Parameter(randn(shape, generator, dev))
        injected = [randn(shape, generator, dev) for _ in range(sampler_steps - 1)] \
            if eta > 0 else []
        self.step_noises = nn.ParameterList(
            [nn.Parameter(z, requires_grad=bool(step_noise)) for z in injected])
        self._cond: Tensor | None = None

    # ---- optional abilities the loop and the Run use ----
    def condition_on(self, prompts: Sequence) -> None:
        """Take a latent model's text conditioning from the run's prompts (pixel models: none)."""
        if self.latent:
            pos, neg = prompt_texts(prompts, self.text, self.negative_text)
            self._cond = text_states(self.parts["tokenizer"], self.parts["text_encoder"], pos,
                                     neg, self.batch, self.dtype)

    def _optimized(self) -> list[Tensor]:
        return [p for p in self.parameters() if p.requires_grad]

    def regularizer(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The chi-norm prior: ``prior_weight`` times the mean :func:`chi_nll` of every
        optimized noise (ReNO's norm regularizer), named ``noise_prior``.

        Shape:
            () -> (total (), {"noise_prior": ()}).
        """
        nll = torch.stack([chi_nll(z).mean() for z in self._optimized()]).mean()
        total = self.prior_weight * nll
        return total, {"noise_prior": total}

    @torch.no_grad()
    def project(self) -> None:
        """With ``reproject``: scale each sample of every optimized noise to norm ``sqrt(d)``,
        the typical shell of a ``d``-dimensional standard normal."""
        if self.reproject:
            for z in self._optimized():
                norm = z.flatten(1).norm(dim=1).clamp_min(1e-12)
                z.mul_((math.sqrt(z[0].numel()) / norm).view(-1, *[1] * (z.dim() - 1)))

    # ---- rendering ----
    def render(self) -> Tensor:
        """DDIM from the noise, then decode; differentiable w.r.t. every optimized noise.

        Shape:
            () -> (batch, 3, height, width) in [0, 1].
        """
        x = self.noise * self.sched.init_noise_sigma
        for k, t in enumerate(self.timesteps):
            z = self.step_noises[k] if k < len(self.step_noises) else None
            if self.checkpointing and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(self._step, x, t, z, use_reentrant=False)
            else:
                x = self._step(x, t, z)
        return clamp_with_grad(self._decode(x))

    forward = render

    def _step(self, x: Tensor, t: int, z: Tensor | None) -> Tensor:
        """One DDIM step x_t -> x_{t-1} (``z``: its injected noise, or None)."""
        extra = {"variance_noise": z} if z is not None else {}
        return self.sched.step(self._eps(x, t), t, x, eta=self.eta if z is not None else 0.0,
                               use_clipped_model_output=True, **extra).prev_sample

    def _eps(self, x: Tensor, t: int) -> Tensor:
        """The model's noise prediction at ``x_t`` (CFG combined; v and x0 outputs converted)."""
        unet = self.parts["unet"]
        if not self.latent:
            out = unet(x.to(self.dtype), t).sample.float()[:, :3]  # learned-variance heads
        else:
            if self._cond is None:
                self.condition_on([])  # no prompts given: the empty text, unconditional
            n = 2 if self.cfg_scale != 1 else 1
            states = self._cond if n == 2 else self._cond[self.batch:]
            out = unet(torch.cat([x] * n).to(self.dtype), t,
                       encoder_hidden_states=states).sample.float()
            if n == 2:
                uncond, cond = out.chunk(2)
                out = uncond + self.cfg_scale * (cond - uncond)
        return eps_from_output(out, x, self.sched.alphas_cumprod[t], self.prediction)  # 0-dim, CPU

    def _decode(self, z: Tensor) -> Tensor:
        """Model space -> image in about [0, 1] (unclamped)."""
        if not self.latent:
            return (z + 1) / 2
        vae = self.parts.get("decoder") or self.parts["vae"]
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        out = vae.decode((z / vae.config.scaling_factor + shift).to(self.dtype)).sample.float()
        return (out + 1) / 2
