"""TD-MPC2 maths against hand-computed values."""

import math

import pytest
import torch
from torchrl.objectives import two_hot_decode, two_hot_encode

from tdmpc2_trl.networks.layers import SimNorm
from tdmpc2_trl.networks.math import (
    Bins,
    RunningScale,
    discount_from_episode_length,
    gaussian_log_prob,
    soft_ce,
    squashed_log_std,
    symexp,
    symlog,
    tanh_log_det,
    two_hot,
    two_hot_inv,
)

BINS = Bins()  # 101 bins on [-10, 10] in symlog space, width 0.2


def test_simnorm_groups_of_8_sum_to_one_and_match_softmax():
    x = torch.randn(3, 32)
    y = SimNorm(8)(x)
    groups = y.view(3, 4, 8)
    torch.testing.assert_close(groups.sum(-1), torch.ones(3, 4))
    # first group by hand
    e = torch.exp(x[0, :8] - x[0, :8].max())
    torch.testing.assert_close(y[0, :8], e / e.sum())


def test_simnorm_paths_equal_softmax_with_and_without_grad():
    x = torch.randn(5, 64) * 30  # large logits: the max shift must keep exp finite
    ref = torch.softmax(x.view(5, 8, 8), -1).view(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(SimNorm(8)(x.clone()), ref)
    xg = x.clone().requires_grad_()
    out = SimNorm(8)(xg)
    torch.testing.assert_close(out, ref)
    w = torch.randn(5, 64)
    (out * w).sum().backward()
    xr = x.clone().requires_grad_()
    (torch.softmax(xr.view(5, 8, 8), -1).view(5, 64) * w).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    # bf16 input (autocast) comes out in fp32
    assert SimNorm(8)(x.bfloat16()).dtype == torch.float32


def test_two_hot_of_nan_is_nan_not_a_crash():
    out = two_hot(torch.tensor([[float("nan")], [0.0]]), BINS)
    assert out[0].sum().isnan() and out[1].sum() == 1  # the NaN reaches the loss, whose update is skipped


def test_symlog_symexp_values():
    x = torch.tensor([-math.e + 1, 0.0, 9.0])
    torch.testing.assert_close(symlog(x), torch.tensor([-1.0, 0.0, math.log(10.0)]))
    torch.testing.assert_close(symexp(symlog(x)), x)


def test_two_hot_between_two_bins():
    # symlog(y) = 0.25 lies between bins 0.2 (index 51) and 0.4 (index 52): weights 0.75 / 0.25.
    y = symexp(torch.tensor([[0.25]]))
    enc = two_hot(y, BINS)
    assert enc.shape == (1, 101)
    torch.testing.assert_close(enc[0, 51], torch.tensor(0.75))
    torch.testing.assert_close(enc[0, 52], torch.tensor(0.25))
    assert enc.sum().item() == pytest.approx(1.0)
    assert (enc > 0).sum() == 2


def test_two_hot_clamps_and_matches_torchrl_in_symlog_space():
    y = torch.tensor([[-1e6], [-3.0], [0.0], [0.7], [50.0], [1e6]])
    ours = two_hot(y, BINS)
    ref = two_hot_encode(symlog(y.squeeze(-1)), BINS.support())
    torch.testing.assert_close(ours, ref)
    assert ours[0, 0] == 1 and ours[-1, -1] == 1


def test_decode_encode_round_trip_and_torchrl_decode():
    y = torch.tensor([[-300.0], [-2.5], [0.0], [0.3], [17.0], [900.0]])
    logits = torch.log(two_hot(y, BINS) + 1e-12)
    torch.testing.assert_close(two_hot_inv(logits, BINS), y, rtol=1e-4, atol=1e-4)
    ref = symexp(two_hot_decode(logits, BINS.support())).unsqueeze(-1)
    torch.testing.assert_close(two_hot_inv(logits, BINS), ref, rtol=1e-5, atol=1e-5)


def test_zero_logits_decode_to_zero_and_soft_ce_by_hand():
    assert two_hot_inv(torch.zeros(2, 101), BINS).abs().max() < 1e-5
    logits = torch.randn(4, 101)
    target = torch.tensor([[0.0], [1.0], [-5.0], [2.0]])
    log_p = torch.log_softmax(logits, -1)
    enc = two_hot(target, BINS)
    expected = -(enc * log_p).sum(-1, keepdim=True)
    torch.testing.assert_close(soft_ce(logits, target, BINS), expected)
    # target 0 is exactly bin 50: CE is -log p_50
    torch.testing.assert_close(soft_ce(logits, target, BINS)[0, 0], -log_p[0, 50])


def test_log_std_bounds():
    raw = torch.tensor([-100.0, 0.0, 100.0])
    torch.testing.assert_close(squashed_log_std(raw), torch.tensor([-10.0, -4.0, 2.0]))


def test_gaussian_log_prob_matches_torch_normal_and_tanh_correction():
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    eps = torch.randn(5, 3)
    x = mean + eps * log_std.exp()
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1, keepdim=True)
    torch.testing.assert_close(gaussian_log_prob(eps, log_std), ref)
    u = torch.tensor([[0.0, 0.5]])
    expected = math.log(1 + 1e-6) + math.log(1 - math.tanh(0.5) ** 2 + 1e-6)
    assert tanh_log_det(u).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("length,expected", [(100, 0.95), (500, 0.99), (1000, 0.995)])
def test_discount_from_episode_length(length, expected):
    # L=100: f=20, (19/20)=0.95; L=500: f=100, 0.99; L=1000: f=200, 0.995 (at the upper clip).
    assert discount_from_episode_length(length) == pytest.approx(expected)
    assert discount_from_episode_length(10) == pytest.approx(0.95)  # f=2 -> 0.5, clipped up
    assert discount_from_episode_length(10_000) == pytest.approx(0.995)  # clipped down


def test_running_scale_known_updates():
    scale = RunningScale(tau=0.01)
    assert scale.value.item() == 1.0
    q = torch.arange(101, dtype=torch.float32).unsqueeze(-1)  # P5 = 5, P95 = 95 -> range 90
    scale.update(q)
    assert scale.value.item() == pytest.approx(1 + 0.01 * (90 - 1))
    scale.update(q)
    v1 = 1 + 0.01 * 89
    assert scale.value.item() == pytest.approx(v1 + 0.01 * (90 - v1))
    # a narrow distribution clamps the range to 1
    scale2 = RunningScale(tau=0.5)
    scale2.update(torch.full((10, 1), 3.0))
    assert scale2.value.item() == pytest.approx(1.0)
    torch.testing.assert_close(scale(torch.tensor([4.0])), torch.tensor([4.0]) / scale.value)
    kept = scale.value.item()
    scale.update(torch.tensor([[float("nan")], [1.0], [2.0]]))  # a non-finite batch leaves the scale alone
    assert scale.value.item() == kept
    assert "value" in scale.state_dict()


def test_one_exp_mish_matches_torch_mish():
    from tdmpc2_trl.networks.layers import Mish, mish_one_exp

    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([-1e4, 1e4, 0.0])])
    torch.testing.assert_close(mish_one_exp(x), torch.nn.functional.mish(x), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the in-place planning form: x - 2x/(n+2) cancels for very negative x, abs error ~1e-6
        torch.testing.assert_close(Mish()(x), torch.nn.functional.mish(x), rtol=1e-5, atol=2e-6)
    xg = x.clone().requires_grad_()
    Mish()(xg).sum().backward()  # the autograd form is ATen's
    torch.testing.assert_close(xg.grad, torch.autograd.grad(torch.nn.functional.mish(x.requires_grad_()).sum(), x)[0])
    assert repr(Mish()) == "Mish()"
