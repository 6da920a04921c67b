"""The geometric-gap dropout mask is i.i.d. Bernoulli(p), scaled like F.dropout, and behaves the same compiled."""

import math

import pytest
import torch

from tdmpc2_trl.networks.dropout import _dropped_positions, dropout, dropout_mask


@pytest.mark.parametrize("p", [0.01, 0.2, 0.7])
def test_mask_values_and_drop_rate(p):
    torch.manual_seed(0)
    n = 400_000
    mask = dropout_mask(torch.empty(n), p)
    kept = mask[mask != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    dropped = (mask == 0).double()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean().item() - p) < 5 * sigma  # fraction dropped, within 5 standard errors


def test_mask_elements_are_independent():
    """Independent trials: the drop rate right after a drop equals p; the gaps between drops are Geometric(p)."""
    torch.manual_seed(1)
    p, n = 0.05, 2_000_000
    dropped = dropout_mask(torch.empty(n), p) == 0
    after_drop = dropped[1:][dropped[:-1]].double().mean().item()
    assert abs(after_drop - p) < 5 * math.sqrt(p * (1 - p) / dropped.sum().item())
    gaps = torch.diff(torch.nonzero(dropped).squeeze(1)).double()
    # Geometric(p) on {1, 2, ...}: mean 1/p, variance (1-p)/p^2
    assert gaps.mean().item() == pytest.approx(1 / p, rel=0.02)
    assert gaps.var().item() == pytest.approx((1 - p) / p**2, rel=0.05)


def test_positions_cover_the_whole_range_and_stay_inside():
    torch.manual_seed(2)
    for n, p in [(10, 0.5), (1000, 0.01), (50_000, 0.001), (1, 0.3)]:
        pos = _dropped_positions(n, p, torch.device("cpu"))
        assert pos.dtype == torch.int64 and (pos >= 0).all() and (pos < n).all()
        assert (torch.diff(pos) > 0).all()  # strictly increasing: no position dropped twice
    tail = torch.cat([_dropped_positions(100, 0.02, torch.device("cpu")) for _ in range(3000)])
    # every index equally likely (no bias towards the start of the tensor)
    first, second = (tail < 50).sum().item(), (tail >= 50).sum().item()
    assert abs(first - second) < 5 * math.sqrt(first + second)


def test_dropout_matches_f_dropout_semantics():
    torch.manual_seed(3)
    x = torch.randn(64, 128, requires_grad=True)
    assert dropout(x, 0.01, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)  # gradient flows through kept elements only
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout(x, 1.0, training=True)


def test_compiled_dropout_uses_one_mask_for_forward_and_backward():
    torch.manual_seed(4)
    x = torch.randn(256, 384, requires_grad=True)

    def f(x):
        return torch.nn.functional.mish(dropout(x * 2, 0.1, training=True)).sum()

    out = torch.compile(f, dynamic=False)(x)
    out.backward()
    dropped = x.grad == 0
    assert 0.05 < dropped.double().mean().item() < 0.15
    # d/dx mish(2x/0.9) at the kept elements: the backward saw the forward's mask
    with torch.no_grad():
        u = x * 2 / 0.9
        sp = torch.nn.functional.softplus(u)
        t = torch.tanh(sp)
        grad = (t + u * (1 - t**2) * torch.sigmoid(u)) * 2 / 0.9
    torch.testing.assert_close(x.grad[~dropped], grad[~dropped], rtol=1e-4, atol=1e-5)
