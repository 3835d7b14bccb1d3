"""Generator registry: name -> "module:Class", imported only when a generator is used.

A registered generator is an ``nn.Module`` whose constructor is ``(width, height, *, batch,
generator, device, **options)`` and which is a :class:`~clipforge.protocols.Generator`
(``render() -> (B, 3, H, W)`` in [0, 1]) or a :class:`~clipforge.protocols.GuidedSampler`; an
optional ``size_multiple`` class attribute says which sizes it can make, and
:class:`~clipforge.protocols.InitFromImage` is the optional init-image ability.

Declaring options: every keyword of the constructor beyond the common ones is an option, its
default is the constructor's default and its type is that default's type. A class attribute
``option_rules`` adds ranges and choices, and the type of an option whose default is None::

    option_rules = {"min_size": {"min": 1, "max": 4096}, "top_k": {"type": int, "min": 1}}

(the keys of :func:`clipforge.fields.check_option`). Rules that involve other settings or
structured values go in an optional classmethod ``check_settings(options, *, steps,
init_image)``, given every option (defaults filled in); it raises ConfigError.
:func:`check_generator` is the one place that checks a generator's size and options, from
these declarations, before any model loads; :func:`build_generator` calls it again.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
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
    "noise": GeneratorSpec("clipforge.generators.noise:NoiseGenerator",
                           "a diffusion model's starting noise, optimized through a short DDIM "
                           "run (ReNO / DNO)"),
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
                    *, init_image: bool = False, steps: int | None = None) -> None:
    """Check everything about a generator that can be checked before any model loads.

    Args:
        name: the registered name.
        width: image width in pixels.
        height: image height in pixels.
        options: the given options.
        init_image: the run starts from an image.
        steps: the run's steps (None: not known yet; rules about them are not checked).

    Raises:
        ConfigError: unknown generator, a size it cannot make (naming the nearest allowed),
            an unknown option or a bad value (naming it and what is allowed), or an init
            image it cannot start from.
    """
    from clipforge.protocols import InitFromImage

    check_size(name, width, height)
    given = check_options(name, dict(options or {}))
    cls = generator_class(name)
    if init_image and not issubclass(cls, InitFromImage):
        raise ConfigError("init_image", f"generator {name!r} cannot start from an image")
    hook = getattr(cls, "check_settings", None)
    if hook is not None:
        try:
            hook({**generator_options(name), **given}, steps=steps, init_image=init_image)
        except ConfigError as e:
            raise ConfigError("generator_options", f"generator {name!r}: {e}") from None


def check_size(name: str, width: int, height: int) -> None:
    """Raise ConfigError naming the nearest allowed size if the generator cannot make this one."""
    from clipforge.fields import check_multiple

    check_multiple(width, height, getattr(generator_class(name), "size_multiple", 1),
                   f"generator {name!r}")


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check each given option's name, type and range from the generator's declaration.

    Returns:
        ``options`` unchanged.

    Raises:
        ConfigError: (field ``generator_options``) naming the option and what is allowed.
    """
    from clipforge.fields import check_option

    allowed = generator_options(name)
    rules = getattr(generator_class(name), "option_rules", {})
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError("generator_options", f"unknown option {key!r} for generator "
                              f"{name!r}; options: {', '.join(allowed) or 'none'}")
        try:
            check_option(key, value, rules.get(key, {}), allowed[key])
        except ConfigError as e:
            raise ConfigError("generator_options", f"generator {name!r} option {e}") from None
    return options


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


def declared_options(name: str) -> dict[str, Any]:
    """:func:`generator_options` read from the generator's source with :mod:`ast`, importing
    nothing (``clipforge models`` lists them without loading torch). A default that is not a
    literal is given as its source text."""
    import ast
    import importlib.util

    module, _, cls = GENERATORS[name].target.partition(":")
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))
    init = next(f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == cls
                for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    a = init.args
    pos = a.posonlyargs + a.args
    pairs = list(zip(pos, [None] * (len(pos) - len(a.defaults)) + a.defaults)) + \
        list(zip(a.kwonlyargs, a.kw_defaults))

    def value(node: ast.AST | None) -> Any:
        if node is None:
            return None
        try:
            return ast.literal_eval(node)
        except ValueError:
            return ast.unparse(node)

    return {arg.arg: value(d) for arg, d in pairs if arg.arg not in _COMMON}


def describe(*, imports: bool = True) -> list[dict[str, Any]]:
    """Name, summary and options of every registered generator (for `clipforge models`).

    Args:
        imports: import each generator to read its options (and say which cannot be
            imported); False reads them from the source (:func:`declared_options`), fast.
    """
    rows = []
    for name, spec in GENERATORS.items():
        try:
            opts = generator_options(name) if imports else declared_options(name)
            note = ""
        except ConfigError as e:
            opts, note = {}, str(e)
        rows.append({"name": name, "summary": spec.summary, "options": opts, "note": note})
    return rows
