"""Generator registry: name -> "module:Class", imported only when a generator is used.

A registered generator is an ``nn.Module`` whose constructor is ``(width, height, *, batch,
generator, device, **options)`` and which is a :class:`~clipforge.protocols.Generator`
(``render() -> (B, 3, H, W)`` in [0, 1]) or a :class:`~clipforge.protocols.GuidedSampler`; an
optional ``size_multiple`` class attribute says which sizes it can make, and
:class:`~clipforge.protocols.InitFromImage` is the optional init-image ability.
:func:`check_generator` is the one place that checks a generator's size and options;
:func:`build_generator` calls it before constructing.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from clipforge.errors import ConfigError


@dataclass(frozen=True)
class GeneratorSpec:
    target: str       # "module:Class"
    summary: str      # one line for `clipforge models`
    extra: str = ""   # the pip extra its dependencies come with ("" = core)


GENERATORS: dict[str, GeneratorSpec] = {
    "pixel": GeneratorSpec("clipforge.generators.pixel:PixelGenerator",
                           "raw RGB pixels, as a multi-scale pyramid by default"),
    "fourier": GeneratorSpec("clipforge.generators.fourier:FourierGenerator",
                             "FFT spectrum with 1/f scaling and decorrelated colour (Lucid)"),
    "vae": GeneratorSpec("clipforge.generators.vae:VaeGenerator",
                         "latent of a diffusers autoencoder (TAESD, Stable Diffusion VAE)"),
    "vqgan": GeneratorSpec("clipforge.generators.vqgan:VqganGenerator",
                           "VQGAN latent snapped to its codebook (diffusers VQModel)"),
    "biggan": GeneratorSpec("clipforge.generators.biggan:BigGANGenerator",
                            "BigGAN-deep latent z and soft ImageNet class vector"),
    "diffusion": GeneratorSpec("clipforge.generators.diffusion:DiffusionSampler",
                               "CLIP-guided diffusion sampling (diffusers DDPM / Stable Diffusion)"),
}

# constructor arguments every generator takes; the rest are its options
_COMMON = {"self", "width", "height", "batch", "generator", "device"}


def generator_class(name: str) -> type:
    """Import and return the class registered as ``name``."""
    spec = GENERATORS.get(name)
    if spec is None:
        raise ConfigError("generator", f"unknown generator {name!r}; available: "
                          f"{', '.join(sorted(GENERATORS))}")
    module, _, cls = spec.target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        extra = f"clipforge[{spec.extra}]" if spec.extra else "clipforge"
        raise ConfigError("generator", f"generator {name!r} needs a missing package "
                          f"({e.name}); run: pip install '{extra}'") from None


def generator_options(name: str) -> dict[str, Any]:
    """The generator's options and their defaults (from its constructor signature)."""
    sig = inspect.signature(generator_class(name).__init__)
    return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()
            if p.name not in _COMMON and p.kind is not inspect.Parameter.VAR_KEYWORD}


def check_generator(name: str, width: int, height: int, options: dict[str, Any] | None = None,
                    *, init_image: bool = False) -> None:
    """Check everything about a generator that can be checked before any model loads.

    Raises:
        ConfigError: unknown generator, a size it cannot make (naming the nearest allowed),
            an unknown option, or an init image it cannot start from.
    """
    from clipforge.protocols import InitFromImage

    check_size(name, width, height)
    check_options(name, dict(options or {}))
    if init_image and not issubclass(generator_class(name), InitFromImage):
        raise ConfigError("init_image", f"generator {name!r} cannot start from an image")


def check_size(name: str, width: int, height: int) -> None:
    """Raise ConfigError naming the nearest allowed size if the generator cannot make this one."""
    from clipforge.fields import check_multiple

    check_multiple(width, height, getattr(generator_class(name), "size_multiple", 1),
                   f"generator {name!r}")


def check_options(name: str, options: dict[str, Any]) -> None:
    """Unknown options, and values whose type differs from the option's default, are refused."""
    allowed = generator_options(name)
    params = inspect.signature(generator_class(name).__init__).parameters
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError("generator_options", f"unknown option {key!r} for generator "
                              f"{name!r}; options: {', '.join(allowed) or 'none'}")
        if value is None and "None" in str(params[key].annotation):
            continue  # the constructor takes None here (e.g. vqgan's subfolder)
        expected = _option_kind(allowed[key], value)
        if expected:
            raise ConfigError("generator_options", f"option {key!r} of generator {name!r}: "
                              f"expected {expected}, got {value!r}")


def _option_kind(default: Any, value: Any) -> str | None:
    """What ``value`` should be, judged by the option's default; None when it fits."""
    import math

    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "a whole number"
    if isinstance(default, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number and math.isfinite(value) else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "text"
    return None  # no default to judge by (None, a list): the generator checks it


def build_generator(name: str, width: int, height: int, *, options: dict[str, Any] | None = None,
                    batch: int = 1, generator=None, device="cpu"):
    """Construct a registered generator after checking its size and options."""
    options = dict(options or {})
    check_generator(name, width, height, options)
    cls = generator_class(name)
    try:
        return cls(width, height, batch=batch, generator=generator, device=device, **options)
    except TypeError as e:
        raise ConfigError("generator_options", f"generator {name!r}: {e}") from None


def describe() -> list[dict[str, Any]]:
    """Name, summary and options of every registered generator (for `clipforge models`)."""
    rows = []
    for name, spec in GENERATORS.items():
        try:
            opts = generator_options(name)
            note = ""
        except ConfigError as e:
            opts, note = {}, str(e)
        rows.append({"name": name, "summary": spec.summary, "options": opts, "note": note})
    return rows
