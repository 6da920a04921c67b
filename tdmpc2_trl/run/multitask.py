"""What a multitask training run needs beyond a single-task one: its task set (sizes read from each task's env, or
a checkpoint's for ``init_from``), one joined ``TaskInfo`` for the loop's bookkeeping, and per-task returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.envs.factory import TaskInfo, task_info
from tdmpc2_trl.networks.tasks import TaskSet, TaskSpec
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
from tdmpc2_trl.run.finetune import checkpoint_task_set, finetune_task_set
from tdmpc2_trl.run.official_checkpoint import official_converter

__all__ = ["joined_info", "log_task_evals", "multitask_setup", "padded_info", "per_task_means", "task_spec"]


def multitask_setup(cfg: TrainConfig) -> tuple[TaskSet, tuple[dict[str, torch.Tensor], TaskSet] | None]:
    """The run's task set and, for ``init_from``, the checkpoint's world-model weights and task set (the run's
    tasks are then padded to the checkpoint's sizes). A task with discrete actions fails in ``task_info``."""
    specs = [task_spec(name) for name in cfg.tasks]
    if not cfg.init_from:
        return TaskSet(tuple(specs), cfg.model.task_dim), None
    path, state = resolve_checkpoint(cfg.init_from, networks_only=True, convert=official_converter())
    pretrained = checkpoint_task_set(state, str(path))
    return finetune_task_set(specs, pretrained), (state["world_model"], pretrained)


def task_spec(name: str) -> TaskSpec:
    """A task's own sizes and episode length, read from its env (``task_info``)."""
    info = task_info(name)
    return TaskSpec(name, info.obs_dim, info.action_dim, info.episode_length)


def padded_info(task_set: TaskSet, episode_length: int, episodic: bool) -> TaskInfo:
    """A ``TaskInfo`` of the task set's padded sizes (what ``make_world_model`` reads)."""
    return TaskInfo(
        "+".join(task_set.names), "multitask", episode_length, episodic, task_set.obs_dim, task_set.action_dim
    )


def joined_info(task_set: TaskSet) -> TaskInfo:
    """One ``TaskInfo`` for the loop: padded sizes, the longest episode (seed steps, evaluation length), episodic if
    any task is (then every task gets the termination head's input; those that never end learn "never")."""
    infos = [task_info(name) for name in task_set.names]
    return padded_info(task_set, max(i.episode_length for i in infos), any(i.episodic for i in infos))


def per_task_means(returns: list[float], task_set: TaskSet, episodes_per_task: int) -> dict[str, float]:
    """Mean return of each task from an evaluation of ``MultitaskEnvFactory``'s task-major batch."""
    out: dict[str, Any] = {}
    for i, name in enumerate(task_set.names):
        chunk = returns[i * episodes_per_task : (i + 1) * episodes_per_task]
        out[name] = sum(chunk) / len(chunk)
    return out


def log_task_evals(
    logger: Any,
    step: int,
    returns: list[float],
    task_set: TaskSet,
    episodes_per_task: int,
    write: Callable[[str], Any],
    unit: str = "",
) -> None:
    """One ``eval.csv`` row (its ``task`` column set) and one printed line per task (``unit``: e.g. " updates")."""
    for task, mean in per_task_means(returns, task_set, episodes_per_task).items():
        logger.log_eval(step, mean, task=task)
        write(f"eval @ {step}{unit}: {task}: mean return {mean:.1f}")
