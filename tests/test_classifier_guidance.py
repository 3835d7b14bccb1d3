"""Classifier guidance on its own: the pure functions against their closed forms (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from clipforge.guidance.classifier_guidance import guided_eps, per_image_rms, predict_x0


def tensors(seed: int = 0, shape=(2, 3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(3)]


def test_guided_eps_is_the_closed_form_with_a_normalized_gradient():
    eps, x, grad = tensors()
    a = torch.tensor(0.3)
    out = guided_eps(eps, x, a, grad, scale=0.7)
    for b in range(2):  # the RMS is taken per image
        rms = grad[b].pow(2).mean().sqrt()
        expected = eps[b] + math.sqrt(1 - 0.3) * 0.7 * grad[b] / rms
        torch.testing.assert_close(out[b], expected)


def test_without_normalizing_the_gradient_is_used_as_given():
    eps, x, grad = tensors(1)
    out = guided_eps(eps, x, 0.64, grad, scale=2.0, normalize_grad=False)
    torch.testing.assert_close(out, eps + 0.6 * 2.0 * grad)


def test_alpha_bar_per_image():
    eps, x, grad = tensors(2)
    a = torch.tensor([0.19, 0.91])
    out = guided_eps(eps, x, a, grad, normalize_grad=False)
    torch.testing.assert_close(out[0], eps[0] + 0.9 * grad[0])
    torch.testing.assert_close(out[1], eps[1] + 0.3 * grad[1])


def test_clamp_max_caps_the_rms_of_the_push_per_image():
    eps, x, grad = tensors(3)
    grad[1] *= 1e-3  # image 1's push is already under the cap: left as it is
    a = 0.5
    out = guided_eps(eps, x, a, grad, scale=0.1, normalize_grad=False, clamp_max=0.05)
    push = (out - eps) / math.sqrt(1 - a)
    assert float(per_image_rms(push)[0]) == pytest.approx(0.05, rel=1e-5)
    torch.testing.assert_close(push[1], 0.1 * grad[1])
    # the capped push keeps its direction
    torch.testing.assert_close(push[0] / push[0].norm(), grad[0] / grad[0].norm())


def test_scale_zero_returns_the_prediction_and_never_asks_for_the_gradient():
    eps, x, _ = tensors(4)

    def no_call(_):
        raise AssertionError("the gradient is not needed at scale 0")

    assert guided_eps(eps, x, 0.5, no_call, scale=0.0) is eps


def test_a_callable_gradient_is_called_with_x_t():
    eps, x, grad = tensors(5)
    seen = []

    def fn(xt):
        seen.append(xt)
        return grad

    torch.testing.assert_close(guided_eps(eps, x, 0.5, fn, scale=0.3),
                               guided_eps(eps, x, 0.5, grad, scale=0.3))
    assert len(seen) == 1 and seen[0] is x


def test_non_finite_gradient_entries_count_as_zero():
    eps, x, grad = tensors(6)
    bad = grad.clone()
    bad[0, 0, 0, 0], bad[1, 2, 3, 4] = float("nan"), float("inf")
    clean = grad.clone()
    clean[0, 0, 0, 0] = clean[1, 2, 3, 4] = 0.0
    out = guided_eps(eps, x, 0.5, bad, scale=0.3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, guided_eps(eps, x, 0.5, clean, scale=0.3))


def test_predict_x0_inverts_the_forward_noising():
    x0, eps, _ = tensors(7)
    a = torch.tensor(0.42)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(predict_x0(x_t, eps, a), x0)


def test_through_autograd_the_push_is_the_closed_form_gradient():
    """loss = |x0 - target|^2 / 2 on the clean estimate (eps held fixed) has the gradient
    (x0 - target) / sqrt(a) at x_t; the guided prediction moves x0 toward the target."""
    eps, x, target = tensors(8)
    a = torch.tensor(0.8)
    xt = x.clone().requires_grad_(True)
    loss = 0.5 * (predict_x0(xt, eps, a) - target).pow(2).sum()
    out = guided_eps(eps, xt, a, lambda v: torch.autograd.grad(loss, v)[0], scale=0.5,
                     normalize_grad=False)
    x0 = predict_x0(x, eps, a)
    torch.testing.assert_close(out, eps + (1 - a).sqrt() * 0.5 * (x0 - target) / a.sqrt())
    before = (x0 - target).pow(2).sum()
    after = (predict_x0(x, out, a) - target).pow(2).sum()
    assert after < before  # the guided prediction's estimate is closer to what the loss wants
