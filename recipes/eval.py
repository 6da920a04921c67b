"""Evaluate a checkpoint: run N episodes (one batched rollout, no exploration noise) and print the returns.

    python recipes/eval.py checkpoint=runs/.../checkpoints/step_000020000.pt episodes=10
    python recipes/eval.py checkpoint=RUN_DIR save_video=true   # + RUN_DIR/videos/checkpoint_step_*.mp4

A multitask checkpoint (``tasks=[...]``, and every checkpoint of ``recipes/train_offline.py``) runs ``episodes``
episodes of every task in one batched rollout and reports each task's mean return. The last line printed is one JSON
object with the mean return (per task for a multitask checkpoint, and the video's path). Every key: EvalAppConfig in
tdmpc2_trl/config/schema.py.
"""

from __future__ import annotations

import json
import sys

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the training recipes set them
from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError, EvalAppConfig


def run(cfg: EvalAppConfig) -> dict:
    import torch

    from tdmpc2_trl.envs.factory import EnvFactory
    from tdmpc2_trl.envs.multitask import MultitaskEnvFactory
    from tdmpc2_trl.envs.video import EpisodeRecorder, video_path, write_video
    from tdmpc2_trl.run.evaluate import evaluate
    from tdmpc2_trl.run.load_agent import load_agent
    from tdmpc2_trl.run.make import resolve_device
    from tdmpc2_trl.run.multitask import per_task_means

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    overrides = {k: getattr(cfg, k) for k in ("mpc", "compile") if getattr(cfg, k) is not None}  # null: as trained
    agent = load_agent(
        cfg.checkpoint,
        task=cfg.task,
        official_tasks=cfg.official_tasks,
        device=device,
        precision=cfg.precision,
        planner_overrides=overrides,
    )
    if agent.note:
        print(agent.note)
    path, state, trained, task_set, info, planner = (
        agent.path,
        agent.state,
        agent.trained,
        agent.task_set,
        agent.info,
        agent.planner,
    )
    if task_set is not None and cfg.save_video:
        raise ConfigError(
            f"save_video records single-task checkpoints only; this one is multitask ({', '.join(task_set.names)})"
        )
    recorder = EpisodeRecorder(cfg.video_size) if cfg.save_video else None
    primer = (planner.primer("cpu"),)  # the envs step on the CPU; the rollout moves data to the planner's device
    if task_set is None:
        env = EnvFactory(trained.task, info.obs, cfg.seed, cfg.episodes, "cpu", primer, render=recorder is not None)()
    else:  # task-major: episodes of task 0, then of task 1, ...
        env = MultitaskEnvFactory(task_set, cfg.seed, cfg.episodes, "cpu", primer)()
    if recorder is not None:
        env.append_transform(recorder)
    returns = evaluate(env, planner, info.episode_length, recorder)
    env.close()
    names = (
        [trained.task] * len(returns)
        if task_set is None
        else [name for name in task_set.names for _ in range(cfg.episodes)]
    )
    for i, (name, r) in enumerate(zip(names, returns)):
        print(f"episode {i}: return {r:.2f}" + (f" ({name})" if task_set is not None else ""))
    result = {
        "checkpoint": str(path),
        "task": trained.task if task_set is None else list(task_set.names),
        "step": state["step"],
        "episodes": len(returns),
        "mean_return": sum(returns) / len(returns),
        "returns": returns,
    }
    if task_set is not None:
        result["task_mean_returns"] = per_task_means(returns, task_set, cfg.episodes)
    if recorder is not None:  # beside the checkpoints: <run dir>/videos/checkpoint_step_*.mp4
        video = video_path(path.parent.parent, int(state["step"]), prefix="checkpoint")
        result["video"] = str(write_video(video, recorder.frames))
    return result


def main(argv: list[str]) -> int:
    from tdmpc2_trl.platform.checkpoint import os_error_line

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
