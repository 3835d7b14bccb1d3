"""Diffusion generator: CLIP-guided sampling over diffusers components (classifier guidance).

At every sampling step the model's noise prediction gives an estimate of the clean image
``x0 = (x_t - sqrt(1 - a) * eps) / sqrt(a)``; the Guide scores that estimate's cutouts, and
the gradient of its loss with respect to ``x_t`` (through the model and the decoder) shifts the
noise prediction, ``eps' = eps + sqrt(1 - a) * grad``: the conditional-score form of classifier
guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", with CLIP in
place of the classifier, as in Katherine Crowson's CLIP-guided diffusion, Disco Diffusion and the
diffusers community ``CLIPGuidedStableDiffusion`` pipeline). Because only the model output is
changed, any diffusers scheduler can take the step; DDIM (Song et al. 2021) and DPM-Solver++
(Lu et al. 2022) are offered, on "trailing" timesteps (Lin et al. 2024, "Common Diffusion Noise
Schedules and Sample Steps are Flawed"), so the first step starts from pure noise.

Two kinds of model load through diffusers' ``from_pretrained`` (a hub id or a local folder):
pixel-space ``UNet2DModel`` pipelines (``google/ddpm-cifar10-32``, the bundled ``shapes-ddpm``)
and Stable Diffusion-format latent pipelines (``UNet2DConditionModel`` + VAE + CLIP text
encoder), where CLIP guidance adds to the model's own text conditioning and classifier-free
guidance; an ``AutoencoderTiny`` (TAESD) can decode the guided estimates for speed.
"""

from __future__ import annotations

import gc
import importlib
import math
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from clipforge.config import MAX_CUTN, ConfigError
from clipforge.images import fit_image
from clipforge.protocols import Estimate

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = {"shapes-ddpm": ASSETS / "shapes-ddpm"}
SCHEDULERS = ("ddim", "dpm++", "dpm++-sde")


class DiffusionModelError(ConfigError):
    """A diffusion model or one of its components cannot be loaded; the message says which."""

    def __init__(self, message: str):
        super().__init__("model", message)


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

    def __init__(self, width: int, height: int, *, batch: int = 1, model: str = "shapes-ddpm",
                 scheduler: str = "ddim", guidance_scale: float = 1.0, normalize_grad: bool = True,
                 clamp_max: float = 0.0, sat_scale: float = 0.0, eta: float = 0.0,
                 skip_steps: int | None = None, cutn_schedule: Sequence[int] | None = None,
                 backprop_model: bool = True, text: str | None = None,
                 negative_text: str | None = None, cfg_scale: float = 7.5,
                 decoder: str | None = None, dtype: str = "auto",
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        _check_options(scheduler, guidance_scale, clamp_max, sat_scale, eta, skip_steps,
                       cutn_schedule, cfg_scale, dtype, model, decoder, text, negative_text)
        for name, flag in (("normalize_grad", normalize_grad), ("backprop_model", backprop_model)):
            if not isinstance(flag, bool):
                raise ConfigError(name, f"expected true or false, got {flag!r}")
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
        parts = _load(model, decoder, width, height, self.dtype)
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
        self.alphas_cumprod = _make_scheduler("ddim", self.scheduler_config).alphas_cumprod.to(
            self._device, torch.float32)
        self._init: Tensor | None = None
        self._image = torch.full((batch, 3, height, width), 0.5, device=self._device)

    # ---- the Generator side: the current image and the init-image ability ----
    def render(self) -> Tensor:
        """The latest estimate (the init image or grey before sampling), (B, 3, H, W) in [0, 1]."""
        return self._image

    @torch.no_grad()
    def init_from(self, image: Tensor) -> None:
        """Start from ``image`` (1 or B, 3, H, W) in [0, 1]; it is noised to ``skip_steps``."""
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
        skip = self.skip_steps if self.skip_steps is not None else \
            (steps // 2 if self._init is not None else 0)
        if skip and self._init is None:
            raise ConfigError("skip_steps", f"{skip} needs an init image (nothing to start from)")
        if skip >= steps:
            raise ConfigError("skip_steps", f"{skip} is out of range; allowed: 0 to {steps - 1}")
        cond = self._text_conditioning(guide) if self.latent else None
        return self._run(guide, steps, skip, cond, generator or torch.Generator().manual_seed(0))

    def _run(self, guide, steps, skip, cond, gen) -> Iterator[Estimate]:
        sched = _make_scheduler(self.scheduler_name, self.scheduler_config)
        sched.set_timesteps(steps, device=self._device)
        timesteps = sched.timesteps[skip:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(skip)
        c = self.unet.config.in_channels
        shape = (self.batch, c, self.height // self.factor, self.width // self.factor)
        noise = torch.randn(shape, generator=gen, device=gen.device).to(self._device)
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
            x0 = (x_in - (1 - a).sqrt() * (eps if self.backprop_model else eps.detach())) / a.sqrt()
            image = self._decode(x0)
            total, parts = guide.loss(image, progress, cutn=cutn)
            if self.sat_scale:
                parts["sat"] = self.sat_scale * (image - image.clamp(0, 1)).abs().mean()
                total = total + parts["sat"]
            if scale != 0:
                (grad,) = torch.autograd.grad(total, x_in)
                grad = torch.nan_to_num(grad.float(), 0.0, 0.0, 0.0)
                rms = lambda g: g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
                if self.normalize_grad:
                    grad = grad / rms(grad).clamp(min=1e-12)
                grad = grad * scale
                if self.clamp_max:
                    grad = grad * (self.clamp_max / rms(grad).clamp(min=1e-12)).clamp(max=1)
                eps = eps.detach() + (1 - a).sqrt() * grad
        return (eps.detach(), image.detach().clamp(0, 1), total.detach(),
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
        kind = self.scheduler_config.get("prediction_type", "epsilon")
        a = self.alphas_cumprod[t]
        if kind == "v_prediction":
            return a.sqrt() * out + (1 - a).sqrt() * x
        if kind == "sample":
            return (x - a.sqrt() * out) / (1 - a).sqrt()
        return out

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

    @torch.no_grad()
    def _text_conditioning(self, guide) -> Tensor:
        """[negative; positive] text-encoder states for classifier-free guidance, (2B, L, D)."""
        pos = self.text if self.text is not None else ", ".join(
            p.text for p in guide.prompts if p.text is not None and p.weight > 0)
        neg = self.negative_text if self.negative_text is not None else ", ".join(
            p.text for p in guide.prompts if p.text is not None and p.weight < 0)
        tok, n = self.tokenizer, self.tokenizer.model_max_length
        for s in (pos, neg):
            if len(tok(s).input_ids) > n:
                warnings.warn(f"diffusion text conditioning truncated to the model's {n}-token "
                              f"context: {s[:40]!r}...", stacklevel=3)
        ids = tok([neg, pos], padding="max_length", max_length=n, truncation=True,
                  return_tensors="pt").input_ids.to(self._device)
        states = self.text_encoder(ids)[0]
        return states.repeat_interleave(self.batch, dim=0).to(self.dtype)


# ---------------------------------------------------------------------------------------------
# loading and checking


def _make_scheduler(name: str, config: dict):
    """DDIM or DPM-Solver++ on the model's noise schedule, fed noise predictions."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = {"prediction_type": "epsilon", "timestep_spacing": "trailing"}
    # A model whose sampler clips x0 to [-1, 1] (pixel DDPMs) gets dynamic thresholding
    # (Saharia et al. 2022, Imagen) instead: at the first "trailing" step sigma can be 1e4
    # (cosine schedules), so a guided x0 estimate is far out of range, and clipping each
    # channel alone turns it into saturated primaries where thresholding keeps its hue.
    if config.get("clip_sample"):
        common.update(clip_sample=False, thresholding=True,
                      sample_max_value=config.get("clip_sample_range", 1.0))
    if name == "ddim":
        return DDIMScheduler.from_config(config, **common)
    algo = "sde-dpmsolver++" if name == "dpm++-sde" else "dpmsolver++"
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type=algo, solver_order=2,
                                                   **common)


def _check_options(scheduler, guidance_scale, clamp_max, sat_scale, eta, skip_steps,
                   cutn_schedule, cfg_scale, dtype, model, decoder, text, negative_text) -> None:
    def number(name, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not lo <= value <= hi:
            raise ConfigError(name, f"{value!r} is out of range; allowed: {lo:g} to {hi:g}")

    if scheduler not in SCHEDULERS:
        raise ConfigError("scheduler", f"{scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    number("guidance_scale", guidance_scale, 0, 1e6)
    number("clamp_max", clamp_max, 0, 1e6)
    number("sat_scale", sat_scale, 0, 1e6)
    number("cfg_scale", cfg_scale, 0, 100)
    number("eta", eta, 0, 1)
    if eta and scheduler != "ddim":
        raise ConfigError("eta", f"eta applies to the ddim scheduler only (got {scheduler!r}; "
                          "use dpm++-sde for a stochastic DPM-Solver++)")
    if skip_steps is not None and (isinstance(skip_steps, bool) or not isinstance(skip_steps, int)
                                   or skip_steps < 0):
        raise ConfigError("skip_steps", f"{skip_steps!r} is out of range; allowed: a whole "
                          "number >= 0 and below steps")
    if cutn_schedule is not None and (not isinstance(cutn_schedule, (list, tuple)) or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CUTN
            for n in cutn_schedule)):
        raise ConfigError("cutn_schedule", f"{cutn_schedule!r}: expected a list of whole numbers "
                          f"from 1 to {MAX_CUTN}")
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError("dtype", f"{dtype!r} is not one of auto, float32, bfloat16")
    for name, value in (("model", model), ("decoder", decoder), ("text", text),
                        ("negative_text", negative_text)):
        if value is not None and not isinstance(value, str) or (name == "model" and not value):
            raise ConfigError(name, f"expected text, got {value!r}")


def _read_index(spec: str, what: str = "model") -> tuple[str, dict]:
    from diffusers import DiffusionPipeline

    path = str(BUNDLED.get(spec, spec))
    if spec in BUNDLED and not Path(path).is_dir():
        raise DiffusionModelError(f"the bundled {spec!r} is missing from {path} (run "
                                  "scripts/make_diffusion_prior.py)")
    try:
        return path, DiffusionPipeline.load_config(path)
    except Exception as e:  # offline hub id, missing folder, corrupt JSON
        raise DiffusionModelError(
            f"{what} {spec!r}: cannot read its model_index.json ({_first_line(e)}). Give a "
            "diffusers folder "
            f"(model_index.json, unet/, scheduler/, ...) or a hub id; bundled: "
            f"{', '.join(BUNDLED)}. Offline, download the model elsewhere and pass its folder."
        ) from None


def _class(spec: str, index: dict, name: str):
    """The class that ``model_index.json`` names for a component (a clear error if absent)."""
    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or None in entry:
        have = sorted(k for k, v in index.items() if not k.startswith("_")
                      and isinstance(v, list) and None not in v)
        raise DiffusionModelError(f"model {spec!r}: component {name!r} is missing (the model "
                                  f"has: {', '.join(have) or 'nothing'})")
    lib, cls = entry
    if lib not in ("diffusers", "transformers"):
        raise DiffusionModelError(f"model {spec!r}: component {name!r} comes from {lib!r}; "
                                  "only diffusers and transformers components are loaded")
    try:
        return getattr(importlib.import_module(lib), cls)
    except ImportError:
        raise DiffusionModelError(f"model {spec!r}: component {name!r} needs the {lib!r} "
                                  f"package; run: pip install {lib}") from None
    except AttributeError:
        raise DiffusionModelError(f"model {spec!r}: unknown {lib} class {cls!r} for "
                                  f"{name!r}") from None


def _component(spec: str, path: str, index: dict, name: str, config_only: bool = False,
               dtype: torch.dtype = torch.float32):
    """Load one component (or only its config) with ``from_pretrained`` from ``path/name``."""
    klass = _class(spec, index, name)
    try:
        if config_only or name == "scheduler":
            return klass.load_config(path, subfolder=name)
        if name == "tokenizer":
            return klass.from_pretrained(path, subfolder=name)
        if klass.__module__.startswith("transformers"):
            return klass.from_pretrained(path, subfolder=name, dtype=dtype)
        return klass.from_pretrained(path, subfolder=name, torch_dtype=dtype,
                                     low_cpu_mem_usage=False)
    except Exception as e:
        raise DiffusionModelError(
            f"model {spec!r}: cannot load component {name!r} ({klass.__name__}) from "
            f"{path}/{name}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _load(model: str, decoder: str | None, width: int, height: int, dtype: torch.dtype) -> dict:
    """Load the model's components; the size is checked against the configs before weights.

    Returns a dict of the components plus ``factor`` (pixels per latent pixel; 1 for pixel
    models) and ``stride`` (the multiple every image side must be).
    """
    path, index = _read_index(model)
    if any(isinstance(index.get(k), list) and None not in index[k]
           for k in ("text_encoder_2", "transformer", "prior", "image_encoder")):
        raise DiffusionModelError(f"model {model!r}: {index.get('_class_name')} pipelines are not "
                                  "supported (pixel UNet2DModel ones and Stable Diffusion 1/2 are)")
    latent = "vae" in index or (index.get("unet") or [None, None])[1] == "UNet2DConditionModel"
    names = ["unet", "scheduler"] + (["vae", "text_encoder", "tokenizer"] if latent else [])
    for n in names:  # every component is named before anything heavy is read
        _class(model, index, n)
    if latent:  # the UNet pads odd latent sizes itself; the VAE sets the stride
        factor = stride = 2 ** (len(_component(model, path, index, "vae", True)
                                    ["block_out_channels"]) - 1)
    else:  # UNet2DModel's skip connections need every level to halve evenly
        factor, stride = 1, 2 ** (len(_component(model, path, index, "unet", True)
                                      ["block_out_channels"]) - 1)
    if width % stride or height % stride:
        near = (max(stride, round(width / stride) * stride),
                max(stride, round(height / stride) * stride))
        raise ConfigError("size", f"{width}x{height}: model {model!r} makes sizes that are "
                          f"multiples of {stride}; nearest allowed: {near[0]}x{near[1]}")
    parts = {n: _component(model, path, index, n, dtype=dtype) for n in names}
    if decoder is not None:
        from diffusers import AutoencoderTiny

        try:
            parts["decoder"] = AutoencoderTiny.from_pretrained(decoder, torch_dtype=dtype,
                                                                low_cpu_mem_usage=False)
        except Exception as e:
            raise DiffusionModelError(f"decoder {decoder!r}: cannot load an AutoencoderTiny "
                                      f"(TAESD) from it: {_first_line(e)}") from None
    return {**parts, "factor": factor, "stride": stride}
