"""The diffusion sampler's parts that are not sampling: its pipeline's components, schedulers, checks.

As diffusers keeps models, schedulers and pipelines apart, :mod:`clipforge.generators.diffusion`
holds only the guided sampling loop; this module

- declares and checks the sampler's options before anything loads (``OPTION_RULES``, read
  through :func:`clipforge.fields.check_option` like every generator's);
- reads a pipeline's ``model_index.json`` (a hub id, a local folder or the bundled
  ``shapes-ddpm`` from :mod:`clipforge.pretrained`), names every component it needs, checks
  the image size against the configs, and only then loads the weights;
- builds the DDIM (Song et al. 2021) and DPM-Solver++ (Lu et al. 2022) schedulers on "trailing"
  timesteps (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"),
  so the first step starts from pure noise.

Two kinds of pipeline load: pixel-space ``UNet2DModel`` ones (``google/ddpm-cifar10-32``,
``shapes-ddpm``) and Stable Diffusion 1/2 latent ones (``UNet2DConditionModel`` + VAE + CLIP
text encoder); an ``AutoencoderTiny`` (TAESD) may be added as a fast decoder.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from clipforge import pretrained
from clipforge.config import MAX_CUTN
from clipforge.errors import ConfigError
from clipforge.fields import check_option
from clipforge.errors import first_line
from clipforge.generators.hub import check_factor, is_local_path
from clipforge.offline import before_hub_access

SCHEDULERS = ("ddim", "dpm++", "dpm++-sde")
DTYPES = ("auto", "float32", "bfloat16")
_UNSUPPORTED = ("text_encoder_2", "transformer", "prior", "image_encoder")


class DiffusionModelError(ConfigError):
    """A diffusion model or one of its components cannot be loaded; the message says which."""

    def __init__(self, message: str):
        super().__init__("model", message)


# The sampler's declared options (clipforge.registry reads them as ``option_rules``); the
# defaults live once, in DiffusionSampler's signature.
OPTION_RULES = {
    "model": {"type": str}, "decoder": {"type": str}, "text": {"type": str},
    "negative_text": {"type": str},
    "scheduler": {"type": str, "choices": SCHEDULERS},
    "guidance_scale": {"type": float, "min": 0, "max": 1e6},
    "clamp_max": {"type": float, "min": 0, "max": 1e6},
    "sat_scale": {"type": float, "min": 0, "max": 1e6},
    "cfg_scale": {"type": float, "min": 0, "max": 100},
    "eta": {"type": float, "min": 0, "max": 1},
    "dtype": {"type": str, "choices": DTYPES},
    "normalize_grad": {"type": bool}, "backprop_model": {"type": bool},
    "skip_steps": {"type": int, "min": 0, "max": 100_000},
}
_OPTIONAL = ("decoder", "text", "negative_text", "skip_steps")


def check_options(*, cutn_schedule, **options) -> None:
    """Check the sampler's options, before anything loads; ConfigError naming the first bad one.

    Args:
        cutn_schedule: None or a list of cutout counts, each 1 to ``MAX_CUTN``.
        options: every option of ``OPTION_RULES`` (model, scheduler, the scales, eta, ...).
    """
    for name, rule in OPTION_RULES.items():
        check_option(name, options[name], rule, None if name in _OPTIONAL else rule["type"]())
    if not options["model"]:
        raise ConfigError("model", "expected a model name or folder, got ''")
    if options["eta"] and options["scheduler"] != "ddim":
        raise ConfigError("eta", f"eta applies to the ddim scheduler only (got "
                          f"{options['scheduler']!r}; use dpm++-sde for a stochastic DPM-Solver++)")
    if cutn_schedule is not None and (not isinstance(cutn_schedule, (list, tuple)) or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CUTN
            for n in cutn_schedule)):
        raise ConfigError("cutn_schedule", f"{cutn_schedule!r}: expected a list of whole numbers "
                          f"from 1 to {MAX_CUTN}")


def skip_of(skip_steps: int | None, steps: int | None, init_image: bool) -> int:
    """The steps skipped when sampling ``steps`` (default: half with an init image, else 0).

    Args:
        skip_steps: the option (None: the default).
        steps: the run's steps (None: not known yet, only the init image is checked).
        init_image: the run starts from an image.

    Raises:
        ConfigError: (field ``skip_steps``) skipping without an init image, or not below steps.
    """
    skip = skip_steps if skip_steps is not None else (steps // 2 if init_image and steps else 0)
    if skip and not init_image:
        raise ConfigError("skip_steps", f"{skip} needs an init image (nothing to start from); "
                          "give --init-image or leave skip_steps out")
    if steps is not None and skip >= steps:
        raise ConfigError("skip_steps", f"{skip} is out of range; allowed: 0 to {steps - 1} "
                          "(below steps)")
    return skip


def make_scheduler(name: str, config: dict):
    """DDIM or DPM-Solver++ on the model's noise schedule, fed noise predictions.

    Args:
        name: one of ``SCHEDULERS``.
        config: the pipeline's scheduler config (its noise schedule).
    """
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


def eps_from_output(out: Tensor, x: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The noise prediction a model's output stands for (``epsilon``, ``v_prediction``, ``sample``).

    Args:
        out: the model's output at x_t.
        x: the noisy sample x_t.
        alpha_bar: alpha-bar at t.
        prediction_type: the scheduler config's ``prediction_type``.

    Shape:
        out, x (B, C, h, w) float32 -> (B, C, h, w) float32.
    """
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * out + (1 - alpha_bar).sqrt() * x
    if prediction_type == "sample":
        return (x - alpha_bar.sqrt() * out) / (1 - alpha_bar).sqrt()
    return out


def load_pipeline(model: str, decoder: str | None, width: int, height: int,
                  dtype: torch.dtype, generator: str = "diffusion") -> dict:
    """Load a pipeline's components; the size is checked against the configs before weights.

    Args:
        model: ``shapes-ddpm``, a hub id or a local diffusers folder.
        decoder: an ``AutoencoderTiny`` for the guided estimates, or None.
        width: image width in pixels.
        height: image height in pixels.
        dtype: the weights' dtype.
        generator: the generator that asks (named when the size is refused).

    Returns:
        the components by name (``unet``, ``scheduler`` config, and ``vae``, ``text_encoder``,
        ``tokenizer`` for latent models, ``decoder`` when asked) plus ``factor`` (pixels per
        latent pixel; 1 for pixel models) and ``stride`` (the multiple every side must be).
    """
    path, index = _read_index(model)
    if any(isinstance(index.get(k), list) and None not in index[k] for k in _UNSUPPORTED):
        raise DiffusionModelError(f"model {model!r}: {index.get('_class_name')} pipelines are not "
                                  "supported (pixel UNet2DModel ones and Stable Diffusion 1/2 are)")
    latent = "vae" in index or (index.get("unet") or [None, None])[1] == "UNet2DConditionModel"
    names = ["unet", "scheduler"] + (["vae", "text_encoder", "tokenizer"] if latent else [])
    for n in names:  # every component is named before anything heavy is read
        _component_class(model, index, n)
    if latent:  # the UNet pads odd latent sizes itself; the VAE sets the stride
        factor = stride = 2 ** (len(_component(model, path, index, "vae", True)
                                    ["block_out_channels"]) - 1)
    else:  # UNet2DModel's skip connections need every level to halve evenly
        factor, stride = 1, 2 ** (len(_component(model, path, index, "unet", True)
                                      ["block_out_channels"]) - 1)
    check_factor(generator, width, height, stride)
    parts = {n: _component(model, path, index, n, dtype=dtype) for n in names}
    if decoder is not None:
        from diffusers import AutoencoderTiny

        if not is_local_path(decoder):
            before_hub_access()
        try:
            parts["decoder"] = AutoencoderTiny.from_pretrained(decoder, torch_dtype=dtype,
                                                                low_cpu_mem_usage=False)
        except Exception as e:
            raise DiffusionModelError(f"decoder {decoder!r}: cannot load an AutoencoderTiny "
                                      f"(TAESD) from it: {first_line(e)}") from None
    return {**parts, "factor": factor, "stride": stride}


def prompt_texts(prompts, text: str | None = None,
                 negative_text: str | None = None) -> tuple[str, str]:
    """A latent model's own (positive, negative) prompt: ``text`` / ``negative_text`` when
    given, else the run's positive / negative text prompts joined by commas."""
    pos = text if text is not None else ", ".join(
        p.text for p in prompts if p.text is not None and p.weight > 0)
    neg = negative_text if negative_text is not None else ", ".join(
        p.text for p in prompts if p.text is not None and p.weight < 0)
    return pos, neg


@torch.no_grad()
def text_states(tokenizer, text_encoder, pos: str, neg: str, batch: int,
                dtype: torch.dtype) -> Tensor:
    """[negative; positive] text-encoder states for classifier-free guidance, (2B, L, D).

    A text longer than the model's context is truncated with a warning that says so.
    """
    import warnings

    n = tokenizer.model_max_length
    for s in (pos, neg):
        if len(tokenizer(s).input_ids) > n:
            warnings.warn(f"diffusion text conditioning truncated to the model's {n}-token "
                          f"context: {s[:40]!r}...", stacklevel=3)
    ids = tokenizer([neg, pos], padding="max_length", max_length=n, truncation=True,
                    return_tensors="pt").input_ids.to(text_encoder.device)
    states = text_encoder(ids)[0]
    return states.repeat_interleave(batch, dim=0).to(dtype)


def _read_index(spec: str) -> tuple[str, dict]:
    """The pipeline's folder (or hub id) and its ``model_index.json``."""
    from diffusers import DiffusionPipeline

    bundled = pretrained.get(spec, "diffusion")
    path = str(bundled.path) if bundled is not None else spec
    if bundled is not None and not bundled.present:
        raise DiffusionModelError(bundled.missing)
    reason = before_hub_access() if bundled is None and not is_local_path(spec) else None
    try:
        return path, DiffusionPipeline.load_config(path)
    except Exception as e:  # offline hub id, missing folder, corrupt JSON
        why = first_line(e) + (f"; offline: {reason}" if reason else "")
        raise DiffusionModelError(
            f"model {spec!r}: cannot read its model_index.json ({why}). Give a "
            "diffusers folder (model_index.json, unet/, scheduler/, ...) or a hub id; bundled: "
            f"{', '.join(pretrained.names('diffusion'))}. Offline, download the model elsewhere "
            "and pass its folder.") from None


def _component_class(spec: str, index: dict, name: str):
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
    klass = _component_class(spec, index, name)
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
            f"{path}/{name}: {first_line(e)}") from None
