"""The table of models bundled with clipforge: where each lives, what it is, how to use it.

Every bundled model is made by a script of ours (``recipe``) and saved with its library's own
save call under ``clipforge/assets/``. The table also holds each model's recommended settings:
the RunConfig fields under which guidance by that model was measured to transfer to the
held-out judge (docs/generators.md has the numbers), per generator. Importing this module
imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

ASSETS = Path(__file__).resolve().parent / "assets"
KINDS = ("clip", "diffusion", "autoencoder")


@dataclass(frozen=True)
class Bundled:
    """One bundled model.

    Attributes:
        name: the spec that names it (``--clip shapes``, ``{"model": "shapes-ddpm"}``).
        kind: ``clip`` (open_clip hub layout), ``diffusion`` (a diffusers pipeline folder) or
            ``autoencoder`` (a diffusers model folder, for the vae and vqgan generators).
        summary: one line for ``clipforge models``.
        recipe: the script that trains and writes it.
        role: ``guide`` or ``judge`` for CLIPs (a judge never guides).
        settings: generator name (``*``: every generator) -> recommended RunConfig fields
            when this model guides.
    """

    name: str
    kind: str
    summary: str
    recipe: str
    role: str = ""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return ASSETS / self.name

    @property
    def present(self) -> bool:
        return self.path.is_dir()

    @property
    def missing(self) -> str:
        """What to say when its files are absent: where they belong and the recipe to run."""
        return f"the bundled {self.name!r} is missing from {self.path} (run {self.recipe})"


# The size and steps under which guidance by the bundled `shapes` CLIP was measured for the
# optimized generators (benchmarks/steering.py: 128 px, 150 steps, 32 cutouts): a run of
# seconds on a CPU, and what `--clip shapes` gets without other settings (a real ViT-B-32
# keeps RunConfig's 256 px / 200 steps).
_SHAPES_RUN = {"width": 128, "height": 128, "steps": 150}
_LATENT_RUN = {**_SHAPES_RUN, "width": 32, "height": 32}

BUNDLED: dict[str, Bundled] = {m.name: m for m in (
    Bundled("shapes", "clip", "small ResNet CLIP trained on captioned shapes: the offline guide",
            "scripts/make_bundled_models.py", role="guide",
            # measured over the whole steering grid (benchmarks/steering.py, docs/generators.md):
            # the pixel pyramid's fine layers at gain (side / 4) ** -0.5 took the cases both the
            # judge and the checker read as asked from 0 to 7 of 32 (level_decay 0.25 and 0.75
            # got 3 and 4). Fourier's flat default spectrum leaves edge noise the judge reads as
            # a star; a steeper one with a slower lr and more TV transfers better.
            # "*" holds for every generator. fp32: on this small ResNet bf16 autocast moved the
            # image gradient to cosine 0.995 of fp32's (benchmarks/step_speed.py), and the
            # steering figures were measured in fp32; channels-last gives it its speed instead.
            settings={"*": {"precision": "fp32"},
                      "pixel": {**_SHAPES_RUN, "generator_options": {"level_decay": 0.5}},
                      "fourier": {**_SHAPES_RUN, "generator_options": {"decay": 2.0},
                                  "lr": 0.015, "tv_weight": 0.2},
                      # the bundled shapes-ddpm makes 32 px; 8 sampler steps had the most cases
                      # both the judge and the checker read as asked of the settings tried on
                      # the first 8 cases of the grid (docs/generators.md: still well below the
                      # bar of 7 of 8)
                      "noise": {"width": 32, "height": 32, "steps": 80, "lr": 0.05,
                                "generator_options": {"sampler_steps": 8}},
                      # the guided sampler at the prior's 32 px (at 256 px one run took 104 s;
                      # the settings of the docs' measured row)
                      "diffusion": {"width": 32, "height": 32, "steps": 50, "cutn": 16},
                      # the latent generators decode through the bundled shapes autoencoders,
                      # so `--clip shapes --generator vae` runs offline with no other setting,
                      # at the 32 px they were trained on: an 8x8 latent decodes to one object,
                      # where a 32x32 one at 128 px tiles object parts (over the grid, judge
                      # and checker both 2 of 32 against 1 for vae, 8 against 2 for vqgan;
                      # 64 px: 3 and 2)
                      "vae": {**_LATENT_RUN, "generator_options": {"model": "shapes-vae"}},
                      "vqgan": {**_LATENT_RUN, "generator_options": {"model": "shapes-vq"}}}),
    Bundled("shapes-judge", "clip", "an independently trained shapes CLIP, used only to score",
            "scripts/make_bundled_models.py", role="judge"),
    Bundled("shapes-ddpm", "diffusion", "tiny pixel DDPM prior on the shapes set (32 px)",
            "scripts/make_diffusion_prior.py"),
    Bundled("shapes-vae", "autoencoder", "small AutoencoderKL on the shapes set (factor 4): "
            "the vae generator's offline model", "scripts/make_shapes_autoencoders.py"),
    Bundled("shapes-vq", "autoencoder", "small VQModel on the shapes set (factor 4, 256 codes): "
            "the vqgan generator's offline model", "scripts/make_shapes_autoencoders.py"),
)}


def get(name: str, kind: str | None = None) -> Bundled | None:
    """The bundled model called ``name`` (of ``kind``, when given), or None."""
    model = BUNDLED.get(name)
    return model if model is not None and kind in (None, model.kind) else None


def names(kind: str | None = None) -> tuple[str, ...]:
    """Names of the bundled models (of one kind)."""
    return tuple(n for n, m in BUNDLED.items() if kind in (None, m.kind))


def recommended(clip: Sequence[str], generator: str) -> dict[str, Any]:
    """Recommended RunConfig fields for guiding ``generator`` with these CLIP specs.

    Only a single bundled guide has recommendations; any other model (a real ViT-B-32, an
    ensemble) keeps RunConfig's own defaults. ``@W`` weights are ignored.
    """
    specs = [s.partition("@")[0].strip() for s in clip]
    if len(specs) != 1 or get(specs[0], "clip") is None:
        return {}
    table = BUNDLED[specs[0]].settings
    return {k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in {**table.get("*", {}), **table.get(generator, {})}.items()}


__all__ = ["Bundled", "BUNDLED", "ASSETS", "get", "names", "recommended"]
