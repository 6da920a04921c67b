"""Start a run from a multitask checkpoint: its networks, and its task embedding rows matched by task name.

A task the checkpoint knows keeps its learned embedding row; a new task gets a fresh row (TD-MPC2's init). The new
task set is padded to the checkpoint's observation and action sizes, so every weight keeps its shape; a task larger
than those sizes cannot reuse the checkpoint and is a one-line error. A single-task run from a multitask
checkpoint is a task set of one.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .config import ConfigError
from .modules import WorldModel
from .multitask import TaskSet, TaskSpec

__all__ = ["checkpoint_task_set", "finetune_task_set", "load_pretrained"]

TASK_SET_KEY = "task_set"  # a multitask checkpoint's {"tasks": [TaskSpec fields...], "task_dim": int}
EMBEDDING_KEY = "tasks.embedding.weight"


def checkpoint_task_set(state: dict[str, Any], source: str = "the checkpoint") -> TaskSet:
    """The task set a multitask checkpoint was trained on."""
    saved = state.get(TASK_SET_KEY)
    if saved is None:
        raise ConfigError(f"{source} is not a multitask checkpoint (no task set): init_from needs one")
    return TaskSet(tuple(TaskSpec(**t) for t in saved["tasks"]), int(saved["task_dim"]))


def finetune_task_set(tasks: Sequence[TaskSpec], pretrained: TaskSet) -> TaskSet:
    """``tasks`` padded to ``pretrained``'s sizes, with its embedding size."""
    too_big = [t.name for t in tasks if t.obs_dim > pretrained.obs_dim or t.action_dim > pretrained.action_dim]
    if too_big:
        raise ConfigError(f"task(s) {too_big} exceed the checkpoint's observation/action sizes "
                          f"({pretrained.obs_dim}/{pretrained.action_dim}); they cannot start from it")
    return TaskSet(tuple(tasks), pretrained.task_dim, pretrained.obs_dim, pretrained.action_dim)


@torch.no_grad()
def load_pretrained(world_model: WorldModel, weights: dict[str, torch.Tensor], pretrained: TaskSet) -> list[str]:
    """Copy a checkpoint's world-model ``weights`` into ``world_model`` (a multitask model built with
    ``finetune_task_set``); embedding rows go by task name. Returns the tasks that start with a fresh row."""
    if world_model.tasks is None:
        raise ConfigError("init_from needs a multitask world model (a task set, even of one task)")
    own = world_model.tasks.task_set
    state = dict(weights)
    old_rows = state.pop(EMBEDDING_KEY)
    new_rows = world_model.tasks.embedding.weight.detach().clone()
    fresh = []
    for i, name in enumerate(own.names):
        if name in pretrained.names:
            new_rows[i] = old_rows[pretrained.index(name)]
        else:
            fresh.append(name)
    state[EMBEDDING_KEY] = new_rows
    for key in ("tasks.masks", "tasks.action_counts", "tasks.discounts"):  # the new task set's own
        state[key] = world_model.state_dict()[key]
    try:
        world_model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"the checkpoint's networks do not fit this model ({str(err).splitlines()[0]}): "
                          f"use the checkpoint's model preset") from None
    return fresh
