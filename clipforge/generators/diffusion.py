"""Diffusion generator: CLIP-guided sampling from a diffusers model (a GuidedSampler).

At every sampling step the model's noise prediction gives an estimate of the clean image
``x0``; the Guide scores that estimate's cutouts, and the gradient of its loss with respect to
``x_t`` (through the model and the decoder) shifts the noise prediction,
``eps' = eps + sqrt(1 - a) * scale * grad``: classifier guidance (Dhariwal & Nichol 2021) with
CLIP in place of the classifier, as in Katherine Crowson's CLIP-guided diffusion, Disco
Diffusion and the diffusers community ``CLIPGuidedStableDiffusion`` pipeline. The maths is in
:mod:`clipforge.guidance.classifier_guidance`; loading the pipeline, the schedulers and the
option checks are in :mod:`clipforge.generators.diffusion_models`. This file is the loop: noise,
guided prediction, scheduler step, one :class:`~clipforge.protocols.Estimate` per step.

Pixel-space models (``UNet2DModel``: ``google/ddpm-cifar10-32``, the bundled ``shapes-ddpm``)
and Stable Diffusion-format latent models (``UNet2DConditionModel`` + VAE + CLIP text encoder)
are sampled; for latent ones CLIP guidance adds to the model's own text conditioning and
classifier-free guidance, and an ``AutoencoderTiny`` (TAESD) can decode the guided estimates.
"""

from __future__ import annotations

import gc
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from clipforge.errors import ConfigError
from clipforge.generators.diffusion_models import (OPTION_RULES, check_options, eps_from_output,
                                                   load_pipeline, make_scheduler, prompt_texts,
                                                   skip_of, text_states)
from clipforge.generators.draw import randn
from clipforge.guidance.classifier_guidance import guided_eps, predict_x0
from clipforge.images import fit_image
from clipforge.protocols import Estimate


class DiffusionSampler(nn.Module):
    """CLIP-guided sampling from a diffusers model; a GuidedSampler (``sample`` yields images).

    Args:
        width: image width in pixels (a multiple of the model's stride, see ``stride``).
        height: image height in pixels.
        batch: images sampled at once.
        model: ``shapes-ddpm`` (bundled), a hub id (``google/ddpm-cifar10-32``,
            ``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local diffusers folder.
        scheduler: ``ddim``, ``dpm++`` (DPM-Solver++ 2M) or ``dpm++-sde``.
        guidance_scale: strength of the CLIP guidance (0 = the model alone).
        normalize_grad: divide the guidance gradient by its RMS first, so the scale is in units
            of the noise prediction whatever the CLIP model and loss size.
        clamp_max: cap on the RMS of the scaled gradient (Disco Diffusion's ``clamp_max``);
            0 = no cap.
        sat_scale: weight of the saturation loss (predicted pixels outside [0, 1], L1).
        eta: DDIM's noise (0 = deterministic DDIM, 1 = DDPM-like); ``ddim`` only.
        skip_steps: steps skipped when starting from an init image (it is noised to that
            point); default: half the steps with an init image, 0 without.
        cutn_schedule: cutouts per step over equal parts of the run, e.g. ``[32, 16, 8]``
            (default: the run's ``cutn`` throughout).
        backprop_model: take the gradient through the denoiser (exact); False treats its noise
            prediction as constant (cheaper, Disco's "fast" variant).
        text: the latent model's own text conditioning (default: the run's positive prompts).
        negative_text: its negative prompt (default: the run's negative prompts).
        cfg_scale: its classifier-free guidance scale (1 = none).
        decoder: an ``AutoencoderTiny`` (TAESD, e.g. ``madebyollin/taesd``) that decodes the
            guided estimates; the final image still uses the model's VAE.
        dtype: ``auto`` (bfloat16 on CUDA, float32 elsewhere), ``float32`` or ``bfloat16``;
            the guidance loss and its gradient are always float32.
        generator: unused at construction (sampling takes its own); accepted for the registry.
        device: where the models run.

    Shape:
        ``sample`` yields (batch, 3, height, width) in [0, 1], one per step.
    """

    size_multiple = 1  # the real stride depends on the model; checked once it is read
    option_rules = OPTION_RULES

    @staticmethod
    def bytes_per_pixel(options: dict) -> float | None:
        """Peak memory added per pixel: measured for the bundled model only (clipforge.memory)."""
        return 5000 if options.get("model") == "shapes-ddpm" else None

    @classmethod
    def check_settings(cls, options: dict, *, steps: int | None, init_image: bool) -> None:
        """The registry's check of every option (defaults filled in) and the run's settings.

        Args:
            options: every option of the constructor.
            steps: the run's steps (None: unknown yet).
            init_image: the run starts from an image.
        """
        check_options(**options)
        skip_of(options["skip_steps"], steps or None, init_image)

    def __init__(self, width: int, height: int, *, batch: int = 1, model: str = "shapes-ddpm",
                 scheduler: str = "ddim", guidance_scale: float = 1.0, normalize_grad: bool = True,
                 clamp_max: float = 0.0, sat_scale: float = 0.0, eta: float = 0.0,
                 skip_steps: int | None = None, cutn_schedule: Sequence[int] | None = None,
                 backprop_model: bool = True, text: str | None = None,
                 negative_text: str | None = None, cfg_scale: float = 7.5,
                 decoder: str | None = None, dtype: str = "auto",
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        check_options(scheduler=scheduler, guidance_scale=guidance_scale, clamp_max=clamp_max,
                      sat_scale=sat_scale, cfg_scale=cfg_scale, eta=eta, dtype=dtype,
                      normalize_grad=normalize_grad, backprop_model=backprop_model,
                      model=model, decoder=decoder, text=text, negative_text=negative_text,
                      skip_steps=skip_steps, cutn_schedule=cutn_schedule)
        self._device = torch.device(device)
        self.dtype = (torch.bfloat16 if self._device.type == "cuda" else torch.float32) \
            if dtype == "auto" else getattr(torch, dtype)
        self.width, self.height, self.batch = width, height, batch
        self.scheduler_name, self.eta, self.skip_steps = scheduler, float(eta), skip_steps
        self.guidance_scale, self.normalize_grad = float(guidance_scale), bool(normalize_grad)
        self.clamp_max, self.sat_scale = float(clamp_max), float(sat_scale)
        self.cutn_schedule = list(cutn_schedule) if cutn_schedule else None
        self.backprop_model, self.cfg_scale = bool(backprop_model), float(cfg_scale)
        self.text, self.negative_text = text, negative_text
        parts = load_pipeline(model, decoder, width, height, self.dtype)
        self.latent = "vae" in parts
        self.unet = parts["unet"]
        self.vae, self.fast_vae = parts.get("vae"), parts.get("decoder")
        self.text_encoder, self.tokenizer = parts.get("text_encoder"), parts.get("tokenizer")
        self.scheduler_config = dict(parts["scheduler"])
        for m in (self.unet, self.vae, self.fast_vae, self.text_encoder):
            if m is not None:
                m.to(self._device).eval().requires_grad_(False)
        self.stride, self.factor = parts["stride"], parts["factor"]
        self.num_train_timesteps = int(self.scheduler_config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = make_scheduler("ddim", self.scheduler_config).alphas_cumprod.to(
            self._device, torch.float32)
        self._init: Tensor | None = None
        self._image = torch.full((batch, 3, height, width), 0.5, device=self._device)

    # ---- the Generator side: the current image and the init-image ability ----
    def render(self) -> Tensor:
        """The latest estimate (the init image, or grey, before sampling).

        Shape:
            () -> (batch, 3, height, width) in [0, 1].
        """
        return self._image

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Start sampling from ``image`` instead of pure noise: it is noised to ``skip_steps``.

        Args:
            image: the picture to start from; fitted to (height, width) first.

        Shape:
            image: (1 or B, 3, H, W) in [0, 1].
        """
        self._init = fit_image(image, self.height, self.width, self._image).expand_as(self._image)
        self._image = self._init.clone()

    # ---- sampling ----
    def sample(self, guide, steps: int,
               generator: torch.Generator | None = None) -> Iterator[Estimate]:
        """Run the guided sampler; yields an :class:`~clipforge.protocols.Estimate` per step.

        Arguments are checked here, before any work; the iterator then does the work. The
        guide is never changed. The last Estimate holds the final sample. Closing the iterator
        frees the run's tensors.

        Args:
            guide: a :class:`~clipforge.guidance.guide.Guide` (its prompts also give a latent
                model its text conditioning).
            steps: sampling steps, 1 to the model's training timesteps (skipped ones included).
            generator: the source of the initial noise and DDIM's ``eta`` noise (CPU is fine:
                noise is drawn there and moved, so a seed gives the same noise on any device).

        Shape:
            each Estimate's image: (B, 3, H, W) float32 in [0, 1].
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or \
                not 1 <= steps <= self.num_train_timesteps:
            raise ConfigError("steps", f"{steps!r} is out of range; diffusion allowed: 1 to "
                              f"{self.num_train_timesteps} (the model's training timesteps)")
        skip = skip_of(self.skip_steps, steps, self._init is not None)
        cond = self._text_conditioning(guide) if self.latent else None
        return self._run(guide, steps, skip, cond, generator or torch.Generator().manual_seed(0))

    def _run(self, guide, steps, skip, cond, gen) -> Iterator[Estimate]:
        sched = make_scheduler(self.scheduler_name, self.scheduler_config)
        sched.set_timesteps(steps, device=self._device)
        timesteps = sched.timesteps[skip:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(skip)
        c = self.unet.config.in_channels
        shape = (self.batch, c, self.height // self.factor, self.width // self.factor)
        noise = randn(shape, gen, self._device)
        x = noise * sched.init_noise_sigma
        try:
            if skip:
                x = sched.add_noise(self._encode(self._init), noise, timesteps[:1])
            for k, t in enumerate(timesteps):
                i = skip + k + 1
                progress = (i - 1) / max(1, steps - 1)
                cutn = None if not self.cutn_schedule else self.cutn_schedule[
                    min(len(self.cutn_schedule) - 1, int(progress * len(self.cutn_schedule)))]
                eps, image, loss, parts = self._guided_eps(x, t, cond, guide, progress, cutn)
                ddim = {"eta": self.eta, "use_clipped_model_output": True} \
                    if self.scheduler_name == "ddim" else {}  # eps re-derived from bounded x0
                x = sched.step(eps, t, x, **ddim, generator=gen).prev_sample
                if i == steps:  # the final sample, decoded by the full decoder
                    with torch.no_grad():
                        image = self._decode(x, final=True).clamp(0, 1)
                self._image = image
                yield Estimate(i, image, loss, parts)
        finally:
            del x, noise, sched
            gc.collect()
            if self._device.type == "cuda":
                torch.cuda.empty_cache()

    def _guided_eps(self, x: Tensor, t: Tensor, cond, guide, progress: float,
                    cutn: int | None = None):
        """Noise prediction at ``x_t`` with the CLIP guidance folded in, and the scored image.

        Shape:
            x (B, C, h, w) float32 -> eps like x, image (B, 3, H, W) float32, loss ().
        """
        scale, a = self.guidance_scale, self.alphas_cumprod[t]
        with torch.set_grad_enabled(scale != 0):
            x_in = x.detach().requires_grad_(scale != 0)
            eps = self._eps(x_in, t, cond)
            image = self._decode(predict_x0(x_in, eps if self.backprop_model else eps.detach(), a))
            total, parts = guide.loss(image, progress, cutn=cutn)
            if self.sat_scale:
                parts["sat"] = self.sat_scale * (image - image.clamp(0, 1)).abs().mean()
                total = total + parts["sat"]
            eps = guided_eps(eps.detach(), x_in, a, lambda xt: torch.autograd.grad(total, xt)[0],
                             scale=scale, normalize_grad=self.normalize_grad,
                             clamp_max=self.clamp_max)
        return (eps, image.detach().clamp(0, 1), total.detach(),
                {k: v.detach() for k, v in parts.items()})

    def _eps(self, x: Tensor, t: Tensor, cond) -> Tensor:
        """The model's noise prediction (CFG combined; v and x0 outputs converted), float32."""
        if self.latent:
            n = 2 if self.cfg_scale != 1 else 1
            states = cond if n == 2 else cond[self.batch:]  # [negative; positive] or positive
            out = self.unet(torch.cat([x] * n).to(self.dtype), t,
                            encoder_hidden_states=states).sample.float()
            if n == 2:
                uncond, text = out.chunk(2)
                out = uncond + self.cfg_scale * (text - uncond)
        else:
            out = self.unet(x.to(self.dtype), t).sample.float()[:, :3]  # learned-variance heads
        return eps_from_output(out, x, self.alphas_cumprod[t],
                               self.scheduler_config.get("prediction_type", "epsilon"))

    def _decode(self, z: Tensor, final: bool = False) -> Tensor:
        """Model space -> image in about [0, 1] (unclamped, so range losses can see overshoot)."""
        if not self.latent:
            return (z + 1) / 2
        vae = self.vae if (final or self.fast_vae is None) else self.fast_vae
        out = vae.decode((z / vae.config.scaling_factor).to(self.dtype)).sample.float()
        return (out + 1) / 2

    @torch.no_grad()
    def _encode(self, image: Tensor) -> Tensor:
        """Image in [0, 1] -> model space (the VAE latent's mode for latent models)."""
        x = image.to(self._device, torch.float32) * 2 - 1
        if not self.latent:
            return x
        enc = self.vae.encode(x.to(self.dtype))
        z = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else enc.latents
        return z.float() * self.vae.config.scaling_factor

    def _text_conditioning(self, guide) -> Tensor:
        """[negative; positive] text-encoder states for classifier-free guidance, (2B, L, D)."""
        pos, neg = prompt_texts(guide.prompts, self.text, self.negative_text)
        return text_states(self.tokenizer, self.text_encoder, pos, neg, self.batch, self.dtype)
