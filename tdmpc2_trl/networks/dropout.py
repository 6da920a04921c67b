"""Dropout for small drop rates (TD-MPC2's Q heads drop 1 %): the same distribution for ~1/100 of the random draws.

``F.dropout`` draws one uniform number per element (ATen's CPU generator is serial: ~7 ns each), and under
``torch.compile`` inductor draws them with a per-element Philox loop that is slower still: for the 1m preset's update
that was about 20 of its ~100 ms. An i.i.d. Bernoulli(p) sequence is fully described by the positions of its
successes, and the gaps between successive successes are i.i.d. Geometric(p) (trials up to and including the next
success). So ``dropout_mask`` draws ``≈ n·p`` geometric gaps, takes their running sum as the dropped positions and
zeroes those in a tensor of ``1/(1−p)``: exactly Bernoulli(p) per element, independent across elements.

The mask is a custom op (``tdmpc2_trl::dropout_mask``): compiled graphs call it as an opaque kernel instead of
lowering random numbers themselves, and the ``nondeterministic_seeded`` tag keeps the partitioner from recomputing
it for the backward pass (which would draw a different mask).
"""

from __future__ import annotations

import math

import torch

__all__ = ["dropout", "dropout_mask"]


def _dropped_positions(n: int, p: float, device: torch.device) -> torch.Tensor:
    """Indices in ``[0, n)`` of the successes of ``n`` Bernoulli(p) trials, from running sums of Geometric(p) gaps."""
    mean = n * p
    draws = int(mean + 6 * math.sqrt(mean) + 16)  # enough to pass n almost always; the loop covers the rest
    ends = torch.empty(draws, dtype=torch.int64, device=device).geometric_(p).cumsum_(0)
    while int(ends[-1]) <= n:  # the last success found is still inside: draw more gaps after it
        more = torch.empty(draws, dtype=torch.int64, device=device).geometric_(p).cumsum_(0) + ends[-1]
        ends = torch.cat([ends, more])
    return ends[ends <= n] - 1  # trial numbers are 1-based


@torch.library.custom_op("tdmpc2_trl::dropout_mask", mutates_args=(), tags=torch.Tag.nondeterministic_seeded)
def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A tensor shaped and typed like ``like``: ``0`` with probability ``p`` per element, else ``1/(1−p)``."""
    mask = torch.full(like.shape, 1.0 / (1.0 - p), dtype=like.dtype, device=like.device)
    if p > 0 and mask.numel():
        mask.view(-1)[_dropped_positions(mask.numel(), p, like.device)] = 0
    return mask


@dropout_mask.register_fake
def _(like: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty_like(like, memory_format=torch.contiguous_format)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with ``dropout_mask``'s draws (faster for small ``p``; any ``p`` in [0, 1))."""
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return x * dropout_mask(x.detach(), p)
