"""Evaluate a checkpoint: run N episodes (one batched rollout, no exploration noise) and print the returns.

    python recipes/eval.py checkpoint=runs/.../checkpoints/step_000020000.pt episodes=10
    python recipes/eval.py checkpoint=RUN_DIR save_video=true   # + RUN_DIR/videos/checkpoint_step_*.mp4

A multitask checkpoint (``tasks=[...]``, and every checkpoint of ``recipes/train_offline.py``) runs ``episodes``
episodes of every task in one batched rollout and reports each task's mean return. The last line printed is one JSON
object with the mean return (per task for a multitask checkpoint, and the video's path). Every key: EvalAppConfig in
tdmpc2_trl/config/schema.py.
"""
from __future__ import annotations

import dataclasses
import json
import sys

import tdmpc2_trl  # noqa: F401  (before torch: its OpenMP spin setting, tdmpc2_trl/__init__.py)
from tdmpc2_trl.config.compose import load_config, to_dataclass
from tdmpc2_trl.config.schema import ConfigError, EvalAppConfig, OfflineConfig, TrainConfig


def run(cfg: EvalAppConfig) -> dict:
    import torch

    from tdmpc2_trl.run.checkpoint import resolve_checkpoint
    from tdmpc2_trl.envs.factory import EnvFactory, task_info
    from tdmpc2_trl.run.evaluate import evaluate
    from tdmpc2_trl.run.make import make_autocast_dtype, make_discount, make_planner, make_world_model, resolve_device
    from tdmpc2_trl.multitask.finetune import TASK_SET_KEY, checkpoint_task_set, finetune_task_set, load_pretrained
    from tdmpc2_trl.run.official_checkpoint import OFFICIAL_MARK, fresh_state_note
    from tdmpc2_trl.multitask.envs import MultitaskEnvFactory
    from tdmpc2_trl.multitask.run import joined_info, per_task_means
    from tdmpc2_trl.envs.video import EpisodeRecorder, video_path, write_video

    path, state = resolve_checkpoint(cfg.checkpoint, networks_only=True, official_tasks=cfg.official_tasks or None)
    if state.get(OFFICIAL_MARK):
        print(fresh_state_note(str(path)))
    offline = "dataset" in state["config"]  # recipes/train_offline.py's checkpoints: always multitask
    trained = to_dataclass(state["config"], OfflineConfig if offline else TrainConfig)
    planner_cfg = dataclasses.replace(trained.planner, **{k: getattr(cfg, k) for k in ("mpc", "compile")
                                                           if getattr(cfg, k) is not None})  # null: as trained
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    task_set = checkpoint_task_set(state, str(path)) if state.get(TASK_SET_KEY) is not None else None
    weights, pretrained = state["world_model"], None
    if task_set is not None and cfg.task is not None:  # one task of the set: a set of one, its embedding row kept
        task_set.index(cfg.task)  # a task the checkpoint does not know: one line
        pretrained, task_set = task_set, finetune_task_set([task_set.tasks[task_set.index(cfg.task)]], task_set)
    if task_set is not None and cfg.save_video:
        raise ConfigError("save_video records single-task checkpoints only; this one is multitask "
                          f"({', '.join(task_set.names)})")
    if task_set is None:
        if cfg.task is None and not trained.task:
            raise ConfigError(f"{path} is an official single-task checkpoint, which does not name its task: "
                              f"give task=NAME")
        trained.task = cfg.task or trained.task
        info = checked_info(task_info(trained.task, trained.obs), state, trained.model)
    else:
        info = joined_info(task_set)
    world_model = make_world_model(trained.model, info, device, task_set)
    if pretrained is not None:
        load_pretrained(world_model, weights, pretrained)
    else:
        world_model.load_state_dict(weights)
    dtype = make_autocast_dtype(cfg.precision or trained.precision, device)
    planner = make_planner(planner_cfg, world_model, None, make_discount(trained.loss, info), dtype)
    recorder = EpisodeRecorder(cfg.video_size) if cfg.save_video else None
    if task_set is None:
        env = EnvFactory(trained.task, info.obs, cfg.seed, cfg.episodes, str(device), (planner.primer(),),
                         render=recorder is not None)()
    else:  # task-major: episodes of task 0, then of task 1, ...
        env = MultitaskEnvFactory(task_set, cfg.seed, cfg.episodes, str(device), (planner.primer(),))()
    if recorder is not None:
        env.append_transform(recorder)
    returns = evaluate(env, planner, info.episode_length, recorder)
    env.close()
    names = [trained.task] * len(returns) if task_set is None else \
        [name for name in task_set.names for _ in range(cfg.episodes)]
    for i, (name, r) in enumerate(zip(names, returns)):
        print(f"episode {i}: return {r:.2f}" + (f" ({name})" if task_set is not None else ""))
    result = {"checkpoint": str(path), "task": trained.task if task_set is None else list(task_set.names),
              "step": state["step"], "episodes": len(returns), "mean_return": sum(returns) / len(returns),
              "returns": returns}
    if task_set is not None:
        result["task_mean_returns"] = per_task_means(returns, task_set, cfg.episodes)
    if recorder is not None:  # beside the checkpoints: <run dir>/videos/checkpoint_step_*.mp4
        video = video_path(path.parent.parent, int(state["step"]), prefix="checkpoint")
        result["video"] = str(write_video(video, recorder.frames))
    return result


def checked_info(info, state: dict, model_cfg):
    """``info`` of the task a single-task checkpoint is evaluated on, checked against the checkpoint's networks'
    sizes; its termination head decides ``episodic`` for the official presets (built for episodic tasks only)."""
    saved = state.get("task") or {}
    want = (saved.get("obs_dim"), saved.get("action_dim"))
    if info.obs == "state" and None not in want and (info.obs_dim, info.action_dim) != want:
        raise ConfigError(f"task {info.name} has {info.obs_dim} observations and {info.action_dim} actions; the "
                          f"checkpoint's networks take {want[0]} and {want[1]}")
    if model_cfg.termination == "latent":
        has_head = any(k.startswith("termination.") for k in state["world_model"])
        info = dataclasses.replace(info, episodic=has_head)
    return info


def main(argv: list[str]) -> int:
    from tdmpc2_trl.run.checkpoint import os_error_line

    try:
        result = run(load_config("eval", argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the video cannot be written (full disk, directory gone): the file, no traceback
        print(os_error_line(err), file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
