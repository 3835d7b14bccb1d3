"""The bundled shapes autoencoders give the vae and vqgan generators a latent space offline.

``shapes-vae`` (AutoencoderKL) and ``shapes-vq`` (VQModel) are written by
scripts/make_shapes_autoencoders.py with diffusers' own ``save_pretrained``; the generators take
them by name, and what they decode is read back by the CLIP-free checker.
"""

import pytest
import torch

from clipforge import pretrained
from clipforge.errors import ConfigError
from clipforge.evaluate.shapes_check import read_shape
from clipforge.generators.hub import bundled_or_given
from clipforge.registry import build_generator
from clipforge.training.shapes import COLOUR_NAMES, SHAPES, ShapesDataset

AUTOENCODERS = {"vae": "shapes-vae", "vqgan": "shapes-vq"}


def test_a_bundled_name_is_its_folder_and_drops_the_hub_subfolder():
    folder, sub = bundled_or_given("shapes-vq", "vqvae", "autoencoder")
    assert folder == str(pretrained.ASSETS / "shapes-vq") and sub is None
    assert bundled_or_given("org/name", "vqvae", "autoencoder") == ("org/name", "vqvae")
    # a CLIP's name is not an autoencoder's: passed on as given (and refused by the loader)
    assert bundled_or_given("shapes", None, "autoencoder") == ("shapes", None)


def test_a_missing_bundled_autoencoder_names_its_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "ASSETS", tmp_path)
    with pytest.raises(ConfigError, match="make_shapes_autoencoders.py"):
        build_generator("vae", 64, 64, options={"model": "shapes-vae"})


@pytest.mark.parametrize("generator", sorted(AUTOENCODERS))
def test_bundled_autoencoders_reconstruct_shapes_the_checker_reads(generator):
    """Encode clean shapes, decode them through the generator: the checker reads them back."""
    val = ShapesDataset(image_size=64).split("val", 12, seed=3)
    gen = build_generator(generator, 64, 64, options={"model": AUTOENCODERS[generator]})
    assert gen.factor == 4
    read = 0
    for i in range(len(val)):
        gen.init_from(val.images[i:i + 1])
        with torch.no_grad():
            r = read_shape(gen.render())
        read += r.matches(COLOUR_NAMES[int(val.colour[i])], SHAPES[int(val.shape[i])])
    assert read >= 10, read
