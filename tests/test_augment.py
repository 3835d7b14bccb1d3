"""Cutouts: shapes, determinism, replay, differentiability."""

import torch

from clipforge.guidance.augment import Cutouts


def test_shapes_and_image_major_order():
    img = torch.rand(2, 3, 64, 48)
    out = Cutouts(16, 5)(img, torch.Generator().manual_seed(0))
    assert out.shape == (10, 3, 16, 16)


def test_same_generator_seed_same_cutouts_and_replay():
    img = torch.rand(1, 3, 64, 64)
    c = Cutouts(24, 8, cut_pow=1.5)
    a = c(img, torch.Generator().manual_seed(3))
    b = c(img, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    params = c.sample(64, 64, torch.Generator().manual_seed(3))
    assert torch.equal(c.apply(img, params), a)
    assert not torch.equal(c(img, torch.Generator().manual_seed(4)), a)


def test_full_crop_without_augment_is_a_resize():
    img = torch.rand(1, 3, 32, 32)
    c = Cutouts(32, 2, augment=False, min_frac=1.0)
    out = c(img, torch.Generator().manual_seed(0))
    assert torch.allclose(out[0], img[0], atol=1e-5) and torch.allclose(out[1], img[0], atol=1e-5)


def test_gradients_flow_to_image():
    img = torch.rand(1, 3, 40, 40, requires_grad=True)
    Cutouts(16, 4)(img, torch.Generator().manual_seed(0)).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_crop_sizes_follow_cut_pow():
    c_small = Cutouts(8, 256, cut_pow=4.0, augment=False)
    c_big = Cutouts(8, 256, cut_pow=0.25, augment=False)
    g = torch.Generator().manual_seed(0)
    small = c_small.sample(64, 64, g).matrices[:, 0, 0].abs().mean()
    big = c_big.sample(64, 64, g).matrices[:, 0, 0].abs().mean()
    assert small < big
