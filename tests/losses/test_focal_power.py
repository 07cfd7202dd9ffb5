"""The focal modulating power: one op for γ = 0 and γ ≥ 1, the guarded form for 0 < γ < 1."""

from __future__ import annotations

import pytest
import torch

from lossmix.functional.focal import _safe_pow


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_value_and_a_finite_gradient_at_zero(gamma):
    base = torch.tensor([0.0, 1e-12, 0.3, 1.0], dtype=torch.float64, requires_grad=True)
    value = _safe_pow(base, gamma)
    expected = torch.where(base > 0, base.detach() ** gamma, torch.tensor(0.0**gamma, dtype=torch.float64))
    torch.testing.assert_close(value, expected, rtol=0, atol=0)
    if gamma == 0:
        assert not value.requires_grad  # a constant 1: the loss's gradient is the BCE's alone
        return
    (grad,) = torch.autograd.grad(value.sum(), base)
    assert torch.isfinite(grad).all()
    assert grad[0] == (1.0 if gamma == 1.0 else 0.0)  # d/db b^g at 0: g·0^(g-1), 0 for g ≠ 1


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_gradcheck(gamma):
    base = torch.rand(6, dtype=torch.float64).add(0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b: _safe_pow(b, gamma), (base,))
