"""Env transforms that give every task of a multitask set the same specs, so that one batched env (and one batched
planner call) can hold envs of different tasks.

``PadObservation`` zero-pads the observation to the set's size, ``PadAction`` accepts the set's padded action and
passes the task's own leading dimensions to the env, and ``task_id_primer`` writes the task id into every step.
TorchRL has no padding transform for observations or actions, hence these two.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch.nn import functional as F
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded
from torchrl.envs import TensorDictPrimer, Transform

from .multitask import TaskSet

__all__ = ["PadObservation", "PadAction", "task_id_primer", "multitask_transforms"]

TASK_KEY = "task"


class PadObservation(Transform):
    """Zero-pad the last dim of ``"observation"`` to ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.size = size

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        return F.pad(obs, (0, self.size - obs.shape[-1]))

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        spec = observation_spec["observation"]
        observation_spec["observation"] = Unbounded((*spec.shape[:-1], self.size), device=spec.device,
                                                    dtype=spec.dtype)
        return observation_spec


class PadAction(Transform):
    """The env takes a ``size``-dim action in [-1, 1] and uses its leading dims (its own action size); the rest is
    padding that a multitask agent keeps at zero."""

    def __init__(self, size: int, own: int) -> None:
        super().__init__(in_keys_inv=["action"], out_keys_inv=["action"])
        self.size, self.own = size, own

    def _inv_apply_transform(self, action: torch.Tensor) -> torch.Tensor:
        return action[..., :self.own]

    def _padded(self, spec: TensorSpec) -> TensorSpec:
        return Bounded(-1.0, 1.0, (*spec.shape[:-1], self.size), device=spec.device, dtype=spec.dtype)

    def transform_action_spec(self, action_spec: TensorSpec) -> TensorSpec:
        if isinstance(action_spec, Composite):  # torchrl versions differ in what they pass here
            action_spec = action_spec.clone()
            action_spec["action"] = self._padded(action_spec["action"])
            return action_spec
        return self._padded(action_spec)


def task_id_primer(task_id: int) -> TensorDictPrimer:
    """A transform that writes ``"task"`` = ``task_id`` (long) at reset and keeps it in every step."""
    return TensorDictPrimer({TASK_KEY: Unbounded((), dtype=torch.long)}, default_value=task_id)


def multitask_transforms(task_set: TaskSet, task: str) -> list[Transform]:
    """The transforms that put task ``task``'s env (actions already in [-1, 1]) into ``task_set``'s shared specs."""
    i = task_set.index(task)
    own = task_set.tasks[i].action_dim
    return [PadObservation(task_set.obs_dim), PadAction(task_set.action_dim, own), task_id_primer(i)]
