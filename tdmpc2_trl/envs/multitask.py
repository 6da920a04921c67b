"""Env transforms that give every task of a multitask set the same specs, so that one batched env (and one batched
planner call) can hold envs of different tasks.

``PadObservation`` zero-pads the observation to the set's size, ``PadAction`` accepts the set's padded action and
passes the task's own leading dimensions to the env, and ``task_id_primer`` writes the task id into every step.
TorchRL has no padding transform for observations or actions, hence these two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch.nn import functional as F
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase, SerialEnv, TensorDictPrimer, Transform, TransformedEnv

from tdmpc2_trl.envs.factory import EnvFactory
from tdmpc2_trl.networks.tasks import TaskSet

__all__ = ["MultitaskEnvFactory", "PadObservation", "PadAction", "task_id_primer", "multitask_transforms"]

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
        observation_spec["observation"] = Unbounded((*spec.shape[:-1], self.size), device=spec.device, dtype=spec.dtype)
        return observation_spec


class PadAction(Transform):
    """The env takes a ``size``-dim action in [-1, 1] and uses its leading dims (its own action size); the rest is
    padding that a multitask agent keeps at zero."""

    def __init__(self, size: int, own: int) -> None:
        super().__init__(in_keys_inv=["action"], out_keys_inv=["action"])
        self.size, self.own = size, own

    def _inv_apply_transform(self, action: torch.Tensor) -> torch.Tensor:
        return action[..., : self.own]

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


@dataclass(frozen=True)
class MultitaskEnvFactory:
    """``envs_per_task`` envs of every task of ``task_set`` as one batched env (task-major: env ``i * envs_per_task
    + k`` is copy ``k`` of task ``i``, seeded ``seed + i * envs_per_task + k``), in the set's shared specs, with a
    clone of each of ``transforms`` on the batch. Each copy keeps its own episode length and bookkeeping. Picklable,
    like ``envs.EnvFactory``, with the same ``num_envs``/``seed`` fields and ``replace``."""

    task_set: TaskSet
    seed: int = 0
    envs_per_task: int = 1
    device: str = "cpu"
    transforms: tuple[Transform, ...] = ()

    @property
    def num_envs(self) -> int:
        return len(self.task_set) * self.envs_per_task

    def task_ids(self) -> list[int]:
        """The task id of each env of the batch."""
        return [i for i in range(len(self.task_set)) for _ in range(self.envs_per_task)]

    def __call__(self) -> TransformedEnv:
        copies = [
            EnvFactory(
                self.task_set.names[i],
                seed=self.seed + n,
                device=self.device,
                transforms=tuple(multitask_transforms(self.task_set, self.task_set.names[i])),
            )
            for n, i in enumerate(self.task_ids())
        ]
        env: EnvBase = SerialEnv(len(copies), copies, device=self.device)
        env = TransformedEnv(env)
        for transform in self.transforms:
            env.append_transform(transform.clone())
        return env

    def replace(self, **changes) -> MultitaskEnvFactory:
        return dataclasses.replace(self, **changes)
