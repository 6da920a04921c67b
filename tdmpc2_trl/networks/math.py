"""TD-MPC2 maths as free functions: two-hot in symlog space, the squashed Gaussian, RunningScale, discount."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchrl.modules.functional import symexp, symlog

__all__ = [
    "Bins",
    "symlog",
    "symexp",
    "two_hot",
    "two_hot_inv",
    "soft_ce",
    "squashed_log_std",
    "gaussian_log_prob",
    "tanh_log_det",
    "discount_from_episode_length",
    "RunningScale",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class Bins:
    """An evenly spaced support of ``num_bins`` points on [vmin, vmax] in symlog space (TD-MPC2: 101 on [-10, 10])."""

    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0

    @property
    def width(self) -> float:
        return (self.vmax - self.vmin) / (self.num_bins - 1)

    def support(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The bin centres (cached per device and dtype in eager code: decoding runs in the planner's inner loop;
        a compiled graph builds them itself, a constant it folds)."""
        if torch.compiler.is_compiling():
            return torch.linspace(self.vmin, self.vmax, self.num_bins, device=device, dtype=dtype)
        return _support(self, torch.device(device) if device is not None else torch.device("cpu"), dtype)


@functools.cache
def _support(bins: Bins, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.linspace(bins.vmin, bins.vmax, bins.num_bins, device=device, dtype=dtype)


def two_hot(x: torch.Tensor, bins: Bins) -> torch.Tensor:
    """Two-hot encoding of ``symlog(x)`` (shape ``[..., 1]``) on the bins; returns ``[..., num_bins]``.

    Written by hand because TorchRL's ``two_hot_encode`` locates the bin by comparing against every support
    point; with evenly spaced bins one ``floor`` does it (numerically identical, checked in the tests).
    """
    pos = (symlog(x.squeeze(-1)).clamp(bins.vmin, bins.vmax) - bins.vmin) / bins.width
    # A NaN target keeps a valid bin index (NaN.long() is out of range) and NaN weights, so the loss is NaN and
    # the update is skipped rather than crashing the run.
    low = pos.nan_to_num(0.0).floor().clamp(0, bins.num_bins - 2)
    upper_weight = (pos - low).unsqueeze(-1)
    low = low.long().unsqueeze(-1)
    out = torch.zeros(*pos.shape, bins.num_bins, device=x.device, dtype=x.dtype)
    out.scatter_(-1, low, 1 - upper_weight)
    out.scatter_(-1, low + 1, upper_weight)
    return out


def two_hot_inv(logits: torch.Tensor, bins: Bins) -> torch.Tensor:
    """Decode logits ``[..., num_bins]`` to a scalar ``[..., 1]``: symexp of the softmax-weighted support."""
    probs = torch.softmax(logits, dim=-1)
    # A product and a sum, not ``probs @ support``: autocast would run that matmul (and round the value) in bf16.
    return symexp((probs * bins.support(logits.device, probs.dtype)).sum(-1, keepdim=True))


def soft_ce(logits: torch.Tensor, target: torch.Tensor, bins: Bins) -> torch.Tensor:
    """Cross-entropy between ``logits [..., num_bins]`` and the two-hot of ``target [..., 1]``; returns ``[..., 1]``."""
    return -(two_hot(target, bins) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


def squashed_log_std(raw: torch.Tensor, log_std_min: float = -10.0, log_std_max: float = 2.0) -> torch.Tensor:
    """Map a raw network output to [log_std_min, log_std_max] with tanh (TD-MPC2's ``log_std``)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(raw) + 1)


def gaussian_log_prob_terms(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-density of ``mean + eps * std`` under N(mean, std)."""
    return -0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI


def gaussian_log_prob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``mean + eps * std`` under N(mean, std), summed over the last dim (keepdim)."""
    return gaussian_log_prob_terms(eps, log_std).sum(-1, keepdim=True)


def tanh_log_det_terms(pre_tanh_action: torch.Tensor) -> torch.Tensor:
    """Per-dimension ``log(1 - tanh(u)^2 + 1e-6)`` (TD-MPC2's form of the change of variables ``a = tanh(u)``)."""
    return torch.log(F.relu(1 - torch.tanh(pre_tanh_action).pow(2)) + 1e-6)


def tanh_log_det(pre_tanh_action: torch.Tensor) -> torch.Tensor:
    """``Σ log(1 - tanh(u)^2 + 1e-6)``: the change-of-variables term of ``a = tanh(u)`` (TD-MPC2's form)."""
    return tanh_log_det_terms(pre_tanh_action).sum(-1, keepdim=True)


def discount_from_episode_length(
    episode_length: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995
) -> float:
    """TD-MPC2's heuristic discount: ``clip((L/5 - 1) / (L/5), 0.95, 0.995)`` for L agent steps per episode."""
    if episode_length <= 0:
        raise ValueError(f"episode_length must be positive, got {episode_length}")
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


class RunningScale(nn.Module):
    """Running estimate of the Q-value range (P95 − P5, at least 1) used to normalise the policy objective.

    ``update(q)`` lerps the stored value towards the percentile range of ``q`` (over its first dim) by ``tau``;
    calling the module divides by the current value. The value is a buffer, so it is checkpointed.
    """

    def __init__(self, tau: float = 0.01) -> None:
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(()))
        self.register_buffer("_quantiles", torch.tensor([0.05, 0.95]))

    @torch.no_grad()
    def update(self, q: torch.Tensor) -> None:
        q = q.detach().reshape(q.shape[0], -1).float()
        low, high = torch.quantile(q, self._quantiles, dim=0, interpolation="linear")
        # TD-MPC2 keeps one scale per trailing element; with scalar Q (the only case here) that is one number.
        target = (high - low).clamp(min=1.0).mean()
        # a non-finite batch (skipped by the updater) must not poison the scale for good: keep the old value
        self.value.lerp_(torch.where(torch.isfinite(target), target, self.value), self.tau)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q / self.value
