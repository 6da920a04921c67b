"""Evaluate a checkpoint: run N episodes (one batched rollout, no exploration noise) and print the returns.

    python recipes/eval.py checkpoint=runs/.../checkpoints/step_000020000.pt episodes=10
    python recipes/eval.py checkpoint=RUN_DIR save_video=true   # + RUN_DIR/videos/checkpoint_step_*.mp4

The last line printed is one JSON object with the mean return (and the video's path).
"""
from __future__ import annotations

import json
import sys

import hydra
import tdmpc2_trl  # noqa: F401  (before torch: its OpenMP spin setting, tdmpc2_trl/__init__.py)
import torch
from omegaconf import DictConfig

from tdmpc2_trl.checkpoint import os_error_line, resolve_checkpoint
from tdmpc2_trl.config import ConfigError
from tdmpc2_trl.envs import make_env, task_info
from tdmpc2_trl.evaluate import evaluate
from tdmpc2_trl.factory import make_autocast_dtype, make_discount, make_planner, make_world_model, resolve_device, to_dict
from tdmpc2_trl.video import EpisodeRecorder, video_path, write_video


def run(cfg: dict) -> dict:
    path, state = resolve_checkpoint(cfg["checkpoint"])
    c = state["config"]
    for key in ("mpc", "compile"):  # null: as trained
        if cfg.get(key) is not None:
            c["planner"][key] = bool(cfg[key])
    device = resolve_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    info = task_info(c["task"], c.get("obs", "state"))
    world_model = make_world_model(c, info, device)
    world_model.load_state_dict(state["world_model"])
    discount = make_discount(c, info)
    recorder = EpisodeRecorder(int(cfg["video_size"])) if cfg.get("save_video") else None
    env = make_env(c["task"], seed=cfg["seed"], num_envs=int(cfg["episodes"]), device=device, obs=info.obs,
                   transforms=[recorder] if recorder else [], render=recorder is not None)
    precision = cfg.get("precision") or c.get("precision", "fp32")
    planner = make_planner(c, world_model, env.action_spec_unbatched, discount,
                           make_autocast_dtype({"precision": precision}, device))
    env.append_transform(planner.primer())
    returns = evaluate(env, planner, info.episode_length, recorder)
    env.close()
    for i, r in enumerate(returns):
        print(f"episode {i}: return {r:.2f}")
    result = {"checkpoint": str(path), "task": c["task"], "step": state["step"], "episodes": len(returns),
              "mean_return": sum(returns) / len(returns), "returns": returns}
    if recorder is not None:  # beside the checkpoints: <run dir>/videos/checkpoint_step_*.mp4
        video = video_path(path.parent.parent, int(state["step"]), prefix="checkpoint")
        result["video"] = str(write_video(video, recorder.frames))
    return result


@hydra.main(config_path="../configs", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        result = run(to_dict(cfg))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the video cannot be written (full disk, directory gone): the file, no traceback
        print(os_error_line(err), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
