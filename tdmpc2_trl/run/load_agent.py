"""A checkpoint's planner for acting (evaluation, export): its networks only, for one task or all of its tasks.

Reads this project's checkpoints and official TD-MPC2 files alike (``run/official_checkpoint.py``). A single-task
official file does not name its task (``task`` must); a multitask checkpoint plans for every task of its set, or,
given ``task``, for that one task (a set of one keeping its embedding row, padded to the checkpoint's sizes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import ConfigError, ModelConfig, OfflineConfig, PlannerConfig, TrainConfig
from tdmpc2_trl.envs.factory import TaskInfo, task_info
from tdmpc2_trl.networks.tasks import TaskSet
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
from tdmpc2_trl.run.finetune import TASK_SET_KEY, checkpoint_task_set, finetune_task_set, load_pretrained
from tdmpc2_trl.run.make import make_autocast_dtype, make_discount, make_planner, make_world_model
from tdmpc2_trl.run.multitask import joined_info
from tdmpc2_trl.run.official_checkpoint import OFFICIAL_MARK, fresh_state_note, official_converter

__all__ = ["LoadedAgent", "load_agent"]


@dataclasses.dataclass
class LoadedAgent:
    path: Path
    state: dict[str, Any]  # the checkpoint, networks only
    trained: TrainConfig | OfflineConfig  # its config (``task`` set to the task evaluated)
    task_set: TaskSet | None  # the tasks planned for (multitask), else None
    info: TaskInfo
    planner: TDMPC2Planner
    note: str | None  # the line to print for an official file


def load_agent(
    checkpoint: str,
    *,
    task: str | None = None,
    official_tasks: list[str] | None = None,
    device: torch.device | str = "cpu",
    precision: str | None = None,
    planner_overrides: dict[str, Any] | None = None,
) -> LoadedAgent:
    """The planner of ``checkpoint`` (a file or a run directory) on ``device``; ``planner_overrides``: fields of
    ``PlannerConfig`` replacing the trained ones; ``precision``: ``None`` keeps the trained one."""
    device = torch.device(device)
    path, state = resolve_checkpoint(checkpoint, networks_only=True, convert=official_converter(official_tasks or None))
    offline = "dataset" in state["config"]  # recipes/train_offline.py's checkpoints: always multitask
    trained = to_dataclass(state["config"], OfflineConfig if offline else TrainConfig)
    planner_cfg: PlannerConfig = dataclasses.replace(trained.planner, **(planner_overrides or {}))
    task_set = checkpoint_task_set(state, str(path)) if state.get(TASK_SET_KEY) is not None else None
    pretrained = None
    if task_set is not None and task is not None:  # one task of the set: a set of one, its embedding row kept
        spec = task_set.tasks[task_set.index(task)]  # a task the checkpoint does not know: one line
        pretrained, task_set = task_set, finetune_task_set([spec], task_set)
    if task_set is None:
        if task is None and not trained.task:
            raise ConfigError(
                f"{path} is an official single-task checkpoint, which does not name its task: give task=NAME"
            )
        trained.task = task or trained.task
        info = checked_info(task_info(trained.task, trained.obs), state, trained.model)
    else:
        info = joined_info(task_set)
    world_model = make_world_model(trained.model, info, device, task_set)
    if pretrained is not None:
        load_pretrained(world_model, state["world_model"], pretrained)
    else:
        world_model.load_state_dict(state["world_model"])
    dtype = make_autocast_dtype(precision or trained.precision, device)
    planner = make_planner(
        planner_cfg, world_model, None, make_discount(trained.loss, info), dtype, horizon=trained.model.horizon
    )
    note = fresh_state_note(str(path)) if state.get(OFFICIAL_MARK) else None
    return LoadedAgent(path, state, trained, task_set, info, planner, note)


def checked_info(info: TaskInfo, state: dict[str, Any], model_cfg: ModelConfig) -> TaskInfo:
    """``info`` of the task a single-task checkpoint acts on, checked against the checkpoint's networks' sizes; its
    termination head decides ``episodic`` for the official presets (built for episodic tasks only)."""
    saved = state.get("task") or {}
    want = (saved.get("obs_dim"), saved.get("action_dim"))
    if info.obs == "state" and None not in want and (info.obs_dim, info.action_dim) != want:
        raise ConfigError(
            f"task {info.name} has {info.obs_dim} observations and {info.action_dim} actions; the "
            f"checkpoint's networks take {want[0]} and {want[1]}"
        )
    if model_cfg.termination == "latent":
        has_head = any(k.startswith("termination.") for k in state["world_model"])
        info = dataclasses.replace(info, episodic=has_head)
    return info
