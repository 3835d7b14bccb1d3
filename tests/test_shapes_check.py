"""The CLIP-free checker reads the procedural shapes data set right, and refuses what is not there."""

import pytest
import torch

from clipforge.evaluate.shapes_check import largest_component, read_shape
from clipforge.training.shapes import COLOUR_NAMES, COLOURS, SHAPES, ShapesDataset, render


@pytest.mark.parametrize("size", [64, 128])
def test_reads_clean_samples_right_at_least_95_percent(size):
    b = ShapesDataset(image_size=size).split("val", 200, seed=3)
    readings = [read_shape(b.images[i]) for i in range(len(b))]
    colour = sum(r.colour == COLOUR_NAMES[c] for r, c in zip(readings, b.colour.tolist()))
    shape = sum(r.shape == SHAPES[s] for r, s in zip(readings, b.shape.tolist()))
    background = sum(r.background == COLOUR_NAMES[c]
                     for r, c in zip(readings, b.background.tolist()))
    assert colour >= 190 and shape >= 190 and background >= 190, (colour, shape, background)


def test_each_shape_is_told_apart_from_the_others():
    n = len(SHAPES)
    shape = torch.arange(n)
    red, blue = torch.tensor(COLOURS["red"]), torch.tensor(COLOURS["blue"])
    images = render(shape, red.expand(n, 3), blue.expand(n, 3),
                    torch.full((n, 2), 0.5), torch.full((n,), 0.3), torch.zeros(n), 96)
    assert [read_shape(x).shape for x in images] == list(SHAPES)
    assert {read_shape(x).colour for x in images} == {"red"}
    assert {read_shape(x).background for x in images} == {"blue"}


def test_noise_on_a_clean_sample_does_not_change_the_reading():
    b = ShapesDataset(image_size=96).split("val", 40, seed=5)
    g = torch.Generator().manual_seed(0)
    noisy = (b.images + 0.08 * torch.randn(b.images.shape, generator=g)).clamp(0, 1)
    same = sum(read_shape(a).matches(read_shape(n).colour, read_shape(n).shape)
               for a, n in zip(b.images, noisy))
    assert same >= 36


def test_a_plain_image_has_no_object():
    r = read_shape(torch.full((3, 64, 64), 0.5))
    assert r.shape == "" and r.colour == "" and r.area == 0.0
    assert not r.matches("red", "circle")


def test_largest_component_keeps_only_the_biggest_blob():
    m = torch.zeros(10, 10, dtype=torch.bool)
    m[0:2, 0:2] = True          # 4 pixels
    m[5:9, 5:9] = True          # 16 pixels
    m[4, 0] = True              # touches nothing (diagonals do not connect)
    out = largest_component(m)
    assert int(out.sum()) == 16 and bool(out[5:9, 5:9].all())
