"""Multitask TD-MPC2: a set of tasks sharing one world model, and the learned task embedding.

Tasks of different sizes share one set of networks (as in the official code): observations are zero-padded to the
largest observation size of the set, actions to the largest action size, and each task has an action mask (1 on
its own dimensions). Every network gets the task's embedding concatenated to its input (``[obs, e]`` for the
encoder, ``[z, e]`` for the policy and termination, ``[z, e, a]`` for dynamics, reward and Q heads).
Each task keeps its own discount (from its own episode length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from tdmpc2_trl.config.presets import config_dir
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.networks.math import discount_from_episode_length

__all__ = [
    "TaskSpec",
    "TaskSet",
    "TaskEmbedding",
    "OFFICIAL_TASK_SETS",
    "official_model_overrides",
    "official_task_dim",
    "official_task_names",
    "official_task_set",
    "official_task_spec",
]


@dataclass(frozen=True)
class TaskSpec:
    """One task of a set: its name and its own (unpadded) sizes."""

    name: str
    obs_dim: int
    action_dim: int
    episode_length: int  # agent decisions per episode (the discount reads it)

    @property
    def discount(self) -> float:
        return discount_from_episode_length(self.episode_length)


@dataclass(frozen=True)
class TaskSet:
    """The tasks one multitask agent learns, in task-id order, and the size of their embedding."""

    tasks: tuple[TaskSpec, ...]
    task_dim: int = 96
    min_obs_dim: int = 0  # pad to at least this (a fine-tuned model keeps its checkpoint's input sizes)
    min_action_dim: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("a task set needs at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"a task appears twice in the task set {names}")
        if self.task_dim < 1:
            raise ConfigError(f"task_dim={self.task_dim} must be >= 1")

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def obs_dim(self) -> int:
        """The padded observation size: the largest of the set (at least ``min_obs_dim``)."""
        return max(self.min_obs_dim, *(t.obs_dim for t in self.tasks))

    @property
    def action_dim(self) -> int:
        """The padded action size: the largest of the set (at least ``min_action_dim``)."""
        return max(self.min_action_dim, *(t.action_dim for t in self.tasks))

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"task {name!r} is not in the task set {self.names}") from None

    def action_masks(self) -> torch.Tensor:
        """``[num_tasks, action_dim]``: 1 on each task's own action dimensions, 0 on the padding."""
        masks = torch.zeros(len(self), self.action_dim)
        for i, t in enumerate(self.tasks):
            masks[i, : t.action_dim] = 1.0
        return masks

    def discounts(self) -> torch.Tensor:
        """``[num_tasks]``: each task's discount, TD-MPC2's rule applied to its own episode length."""
        return torch.tensor([t.discount for t in self.tasks])

    def pad_observation(self, obs: torch.Tensor) -> torch.Tensor:
        """Zero-pad the last dim of ``obs`` to the set's observation size."""
        missing = self.obs_dim - obs.shape[-1]
        if missing < 0:
            raise ValueError(f"observation of size {obs.shape[-1]} is larger than the task set's {self.obs_dim}")
        return torch.nn.functional.pad(obs, (0, missing)) if missing else obs

    def pad_action(self, action: torch.Tensor) -> torch.Tensor:
        """Zero-pad the last dim of ``action`` to the set's action size."""
        return torch.nn.functional.pad(action, (0, self.action_dim - action.shape[-1]))


class TaskEmbedding(nn.Module):
    """The learned task embedding (``nn.Embedding(num_tasks, task_dim, max_norm=1)`` as TD-MPC2) and the task set's
    action masks and action counts, looked up by task id."""

    def __init__(self, task_set: TaskSet) -> None:
        super().__init__()
        self.task_set = task_set
        self.embedding = nn.Embedding(len(task_set), task_set.task_dim, max_norm=1.0)
        nn.init.uniform_(self.embedding.weight, -0.02, 0.02)  # TD-MPC2's init of embeddings
        masks = task_set.action_masks()
        self.register_buffer("masks", masks)
        self.register_buffer("action_counts", masks.sum(-1, keepdim=True))
        self.register_buffer("discounts", task_set.discounts())

    def forward(self, task: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[*B, task_dim]`` of task ids ``[*B]``."""
        return self.embedding(task)

    def condition(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """``cat(x, e(task))`` along the last dim."""
        return torch.cat([x, self(task).to(x.dtype)], dim=-1)

    def mask(self, task: torch.Tensor) -> torch.Tensor:
        """Action masks ``[*B, action_dim]`` of task ids ``[*B]``."""
        return self.masks[task]


# ---------------------------------------------------------------- the official task sets

_DMC_SIZES = {  # domain: (observation size, action size) of the state observations, action repeat 2: 500 decisions
    "walker": (24, 6),
    "cheetah": (17, 6),
    "reacher": (6, 2),
    "acrobot": (6, 1),
    "pendulum": (3, 1),
    "cartpole": (5, 1),
    "cup": (8, 2),
    "finger": (9, 2),
    "fish": (24, 5),
    "hopper": (15, 4),
}
_DMC_EPISODE = 500
_METAWORLD_SIZES, _METAWORLD_EPISODE = (39, 4), 100

OFFICIAL_TASK_SETS = ("mt30", "mt80")


def official_task_names(name: str) -> list[str]:
    """The task list of ``configs/task_sets/<name>.yaml`` (official task-id order; ``includes:`` comes first)."""
    if name not in OFFICIAL_TASK_SETS:
        raise ConfigError(f"unknown task set {name!r}; known: {list(OFFICIAL_TASK_SETS)}")
    cfg = OmegaConf.load(config_dir() / "task_sets" / f"{name}.yaml")
    included = official_task_names(cfg.includes) if cfg.get("includes") else []
    return included + list(cfg.tasks)


def _official_spec(name: str) -> TaskSpec:
    if name.startswith("mw-"):
        return TaskSpec(name, *_METAWORLD_SIZES, _METAWORLD_EPISODE)
    if name.startswith("reacher-three"):  # the official three-link reacher: 3 joints
        return TaskSpec(name, 8, 3, _DMC_EPISODE)
    return TaskSpec(name, *_DMC_SIZES[name.split("-", 1)[0]], _DMC_EPISODE)


def official_task_spec(name: str) -> TaskSpec | None:
    """The sizes and episode length of a task of the official lists (mt80 includes mt30); ``None`` for any other."""
    return _official_spec(name) if name in official_task_names("mt80") else None


def official_task_dim(task_set: str, model: str) -> int:
    """The official embedding size: 96, except 64 for mt30 at the 5m, 19m and 48m sizes (the official checkpoints)."""
    return 64 if task_set == "mt30" and model in ("5m", "19m", "48m") else 96


def official_task_set(name: str, model: str = "5m") -> TaskSet:
    """``mt30`` or ``mt80`` with the official task order, sizes, episode lengths and embedding size."""
    return TaskSet(tuple(_official_spec(t) for t in official_task_names(name)), official_task_dim(name, model))


def official_model_overrides(name: str, model: str) -> dict[str, int]:
    """Model settings of the official multitask checkpoints that differ from the preset (mt30 at 19m: latent 512)."""
    return {"latent_dim": 512} if (name, model) == ("mt30", "19m") else {}
