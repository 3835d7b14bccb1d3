"""Closed forms of the loss terms."""

import math

import torch

from clipforge.guidance.losses import init_image_loss, range_loss, spherical_dist_loss, tv_loss


def test_spherical_distance_closed_form():
    x = torch.tensor([[1.0, 0.0]])
    assert spherical_dist_loss(x, x).item() == 0.0
    # orthogonal unit vectors: angle pi/2 -> theta^2 / 2 = pi^2 / 8
    assert math.isclose(spherical_dist_loss(x, torch.tensor([[0.0, 3.0]])).item(), math.pi**2 / 8,
                        rel_tol=1e-6)
    assert math.isclose(spherical_dist_loss(x, -x).item(), math.pi**2 / 2, rel_tol=1e-6)
    theta = 0.3
    y = torch.tensor([[math.cos(theta), math.sin(theta)]])
    assert math.isclose(spherical_dist_loss(x, y).item(), theta**2 / 2, rel_tol=1e-5)


def test_spherical_distance_broadcasts():
    a, b = torch.randn(4, 5, 8), torch.randn(8)
    assert spherical_dist_loss(a, b).shape == (4, 5)


def test_tv_loss_closed_form():
    img = torch.zeros(2, 3, 4, 4)
    assert torch.equal(tv_loss(img), torch.zeros(2))
    img[1, :, :, 2:] = 1.0  # one vertical edge: 4 rows x 1 jump of 1 per channel over 3*4*3
    assert math.isclose(tv_loss(img)[1].item(), (3 * 4) / (3 * 4 * 3), rel_tol=1e-6)


def test_range_loss_closed_form():
    img = torch.full((1, 3, 2, 2), 0.5)
    assert range_loss(img).item() == 0.0
    img[0, 0, 0, 0] = 1.5
    img[0, 1, 0, 0] = -1.0
    assert math.isclose(range_loss(img).item(), (0.25 + 1.0) / 12, rel_tol=1e-6)


def test_init_image_loss():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert math.isclose(init_image_loss(a, b).item(), 0.25)
