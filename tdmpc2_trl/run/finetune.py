"""Start a run from a multitask checkpoint: its networks, and its task embedding rows matched by task name.

A task the checkpoint knows keeps its learned embedding row; a new task gets a fresh row (TD-MPC2's init). The new
task set is padded to the checkpoint's observation and action sizes, so every weight keeps its shape; a task larger
than those sizes cannot reuse the checkpoint and is a one-line error. A single-task run from a multitask
checkpoint is a task set of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.networks.tasks import TaskSet, TaskSpec
from tdmpc2_trl.networks.world_model import WorldModel

__all__ = [
    "checkpoint_task_set",
    "finetune_task_set",
    "load_pretrained",
    "load_single_task_pretrained",
    "task_set_state",
]

TASK_SET_KEY = "task_set"  # a multitask checkpoint's {"tasks": [TaskSpec fields...], "task_dim": int}
EMBEDDING_KEY = "tasks.embedding.weight"


def task_set_state(task_set: TaskSet) -> dict[str, Any]:
    """What a multitask checkpoint keeps of its task set (plain data: ``checkpoint_task_set`` reads it back)."""
    return {
        "tasks": [asdict(t) for t in task_set.tasks],
        "task_dim": task_set.task_dim,
        "min_obs_dim": task_set.obs_dim,
        "min_action_dim": task_set.action_dim,
    }


def checkpoint_task_set(state: dict[str, Any], source: str = "the checkpoint") -> TaskSet:
    """The task set a multitask checkpoint was trained on."""
    saved = state.get(TASK_SET_KEY)
    if saved is None:
        raise ConfigError(f"{source} is not a multitask checkpoint (no task set): init_from needs one")
    return TaskSet(
        tuple(TaskSpec(**t) for t in saved["tasks"]),
        int(saved["task_dim"]),
        int(saved.get("min_obs_dim", 0)),
        int(saved.get("min_action_dim", 0)),
    )


def finetune_task_set(tasks: Sequence[TaskSpec], pretrained: TaskSet) -> TaskSet:
    """``tasks`` padded to ``pretrained``'s sizes, with its embedding size."""
    too_big = [t.name for t in tasks if t.obs_dim > pretrained.obs_dim or t.action_dim > pretrained.action_dim]
    if too_big:
        raise ConfigError(
            f"task(s) {too_big} exceed the checkpoint's observation/action sizes "
            f"({pretrained.obs_dim}/{pretrained.action_dim}); they cannot start from it"
        )
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
    # The termination head exists only for episodic task sets: a head the checkpoint lacks starts fresh, one this
    # model lacks is dropped; every other weight must fit.
    own_keys = set(world_model.state_dict())
    state = {k: v for k, v in state.items() if k in own_keys or not k.startswith("termination.")}
    try:
        missing, unexpected = world_model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape differs
        raise ConfigError(
            f"the checkpoint's networks do not fit this model ({_first_problem(err)}): "
            f"use the checkpoint's model preset"
        ) from None
    misfits = [k for k in missing if not k.startswith("termination.")] + list(unexpected)
    if misfits:
        raise ConfigError(
            f"the checkpoint's networks do not fit this model (e.g. {misfits[0]}): use the checkpoint's model preset"
        )
    return fresh


def load_single_task_pretrained(world_model: WorldModel, source: str) -> str:
    """Load the networks of a single-task checkpoint (this project's or an official one) into a single-task
    ``world_model``; returns the line the run prints. Nothing else of the file is read (the optimisers, RunningScale
    and replay buffer start fresh)."""
    from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
    from tdmpc2_trl.run.official_checkpoint import OFFICIAL_MARK, fresh_state_note, official_converter

    path, state = resolve_checkpoint(source, networks_only=True, convert=official_converter())
    if state.get(TASK_SET_KEY) is not None:
        raise ConfigError(f"{path} is a multitask checkpoint: give tasks=[...] to start from it")
    try:
        world_model.load_state_dict(state["world_model"])
    except RuntimeError as err:  # a shape, a missing or an extra network
        raise ConfigError(
            f"the networks of {path} do not fit this model ({_first_problem(err)}): use the "
            f"checkpoint's model preset and a task of its sizes"
        ) from None
    if state.get(OFFICIAL_MARK):
        return fresh_state_note(str(path))
    return f"networks from {path}; the optimisers, RunningScale and replay buffer start fresh"


def _first_problem(err: RuntimeError) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0]
