"""The procedural captioned-shapes data set: deterministic, well-formed, captions true."""

import pytest
import torch

from clipforge.training.shapes import COLOUR_NAMES, COLOURS, SHAPES, ShapesDataset, caption


def test_vocab_and_caption_phrasings():
    assert {"circle", "square", "triangle", "star"} <= set(SHAPES)
    assert {"red", "green", "blue", "yellow"} <= set(COLOUR_NAMES)
    assert caption("circle", "red", "blue") == "a red circle on a blue background"
    assert caption("circle", "red") == "a red circle"
    got = {caption("circle", "red", phrasing=i) for i in range(4)}
    assert got == {"a red circle", "red circle", "a circle that is red", "a photo of a red circle"}
    with pytest.raises(ValueError, match="shape"):
        caption("hexagon", "red")
    with pytest.raises(ValueError, match="background"):
        caption("circle", "red", "plaid")


def test_same_seed_same_batch_and_streams_differ():
    ds = ShapesDataset(image_size=32)
    a = ds.sample(8, torch.Generator().manual_seed(3))
    b = ds.sample(8, torch.Generator().manual_seed(3))
    c = ds.sample(8, torch.Generator().manual_seed(4))
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (8, 3, 32, 32) and a.images.dtype == torch.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    # fixed splits: repeatable, and train/val are different streams
    v1, v2 = ds.split("val", 4), ds.split("val", 4)
    assert torch.equal(v1.images, v2.images)
    assert not torch.equal(ds.split("train", 4).images, v1.images)
    s1, s2 = ds.stream(4, seed=1), ds.stream(4, seed=1)
    for _ in range(2):
        assert next(s1).captions == next(s2).captions
    with pytest.raises(ValueError, match="split"):
        ds.split("test")


def test_pixels_match_captions():
    ds = ShapesDataset(image_size=64, jitter=0.0)
    b = ds.sample(64, torch.Generator().manual_seed(0))
    rgb = torch.tensor([COLOURS[c] for c in COLOUR_NAMES])
    for i in range(len(b)):
        cx, cy = (b.centre[i] * 64).long().tolist()
        centre = b.images[i, :, cy, cx]
        corner = b.images[i, :, 0, 0]
        assert torch.allclose(centre, rgb[b.colour[i]], atol=0.02), b.captions[i]
        assert torch.allclose(corner, rgb[b.background[i]], atol=0.02), b.captions[i]
        words = b.captions[i].split()
        assert SHAPES[b.shape[i]] in words and COLOUR_NAMES[b.colour[i]] in words
        assert (COLOUR_NAMES[b.background[i]] in words) == bool(b.has_background[i])
    # antialiased edges: some pixels are strictly between the two colours
    assert ((b.images * 255).round() % 255 != 0).float().mean() > 0.05


def test_match_matrix_marks_true_captions():
    b = ShapesDataset(image_size=32).sample(64, torch.Generator().manual_seed(1))
    m = b.match_matrix()
    assert m.diagonal().all()
    i, j = m.fill_diagonal_(False).nonzero()[0].tolist()  # some repeated caption in 64 samples
    assert b.shape[i] == b.shape[j] and b.colour[i] == b.colour[j]


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(image_size=8)
    with pytest.raises(ValueError, match="hexagon"):
        ShapesDataset(shapes=("hexagon",))
