"""The affine map between the world model's actions in [-1, 1] and an env's own action units.

TD-MPC2's networks (the policy's tanh, MPPI's clamp) work in [-1, 1]. ``ActionBounds`` built from a TorchRL
``Bounded`` action spec maps them onto the spec's per-dimension ``[low, high]`` and back::

    env = low + (a + 1) / 2 · (high − low) = a · scale + offset,   scale = (high − low) / 2, offset = (high + low) / 2

The planner maps its output with ``to_env``; the loss maps replayed env-unit actions back with ``to_unit``. A ±1 spec
leaves actions untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrl.data import Bounded

from tdmpc2_trl.config.schema import ConfigError

__all__ = ["ActionBounds"]


def _spec_bounds(action_spec, action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` ``[action_dim]`` of a ``Bounded`` spec; ``ConfigError`` (one line) for anything else."""
    kind = type(action_spec).__name__
    if not isinstance(action_spec, Bounded):
        raise ConfigError(
            f"the action spec is {kind}: TD-MPC2 needs a Bounded action spec with finite low/high "
            f"(its actions are an affine map of [-1, 1])"
        )
    if not action_spec.dtype.is_floating_point:
        raise ConfigError(f"the action spec is {kind} of dtype {action_spec.dtype}: TD-MPC2 needs continuous actions")
    if action_spec.shape[-1:] != (action_dim,):
        raise ConfigError(
            f"the action spec has shape {tuple(action_spec.shape)}; the world model acts in {action_dim} dims"
        )
    low = action_spec.space.low.expand(action_spec.shape).reshape(-1, action_dim).to(torch.float32)
    high = action_spec.space.high.expand(action_spec.shape).reshape(-1, action_dim).to(torch.float32)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ConfigError(
            f"the action spec has non-finite bounds (low={low[0].tolist()}, high={high[0].tolist()}): "
            f"TD-MPC2 needs finite ones"
        )
    if (low != low[0]).any() or (high != high[0]).any():
        raise ConfigError("the action spec's bounds differ between batched envs; pass one env's spec")
    if not (high[0] > low[0]).all():
        raise ConfigError(
            f"the action spec needs high > low in every dim (low={low[0].tolist()}, high={high[0].tolist()})"
        )
    return low[0], high[0]


class ActionBounds(nn.Module):
    """``to_env``: [-1, 1] → the spec's ``[low, high]``; ``to_unit``: back. ``None`` spec: [-1, 1] itself.

    ``scale`` and ``offset`` are non-persistent buffers: they follow ``.to(device)`` and stay out of state_dicts,
    so checkpoints do not depend on the spec. ±1 bounds (``identity``) skip both maps: no extra ops.
    """

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, action_spec: Bounded | None, action_dim: int) -> None:
        super().__init__()
        if action_spec is None:
            low, high = -torch.ones(action_dim), torch.ones(action_dim)
        else:
            low, high = _spec_bounds(action_spec, action_dim)
        self.register_buffer("scale", (high - low) / 2, persistent=False)
        self.register_buffer("offset", (high + low) / 2, persistent=False)
        self.register_buffer("low", low.clone(), persistent=False)
        self.register_buffer("high", high.clone(), persistent=False)
        self.identity = bool((low == -1).all() and (high == 1).all())

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """World-model action in [-1, 1] → env units, clamped to ``[low, high]`` against rounding."""
        if self.identity:
            return action
        env_action = action * self.scale.to(action.dtype) + self.offset.to(action.dtype)
        return torch.minimum(torch.maximum(env_action, self.low.to(action.dtype)), self.high.to(action.dtype))

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """Env-unit action → the world model's [-1, 1] (the inverse of ``to_env`` inside the bounds)."""
        if self.identity:
            return action
        return (action - self.offset.to(action.dtype)) / self.scale.to(action.dtype)
