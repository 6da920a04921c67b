"""Evaluate a checkpoint: run N episodes (one batched rollout, no exploration noise) and print the returns.

    python recipes/eval.py checkpoint=runs/.../checkpoints/step_000020000.pt episodes=10

The last line printed is one JSON object with the mean return.
"""
from __future__ import annotations

import json
import sys

import hydra
import torch
from omegaconf import DictConfig

from tdmpc2_trl.checkpoint import resolve_checkpoint
from tdmpc2_trl.config import ConfigError
from tdmpc2_trl.envs import make_env, task_info
from tdmpc2_trl.evaluate import evaluate
from tdmpc2_trl.factory import make_autocast_dtype, make_discount, make_planner, make_world_model, resolve_device, to_dict


def run(cfg: dict) -> dict:
    path, state = resolve_checkpoint(cfg["checkpoint"])
    c = state["config"]
    if cfg["mpc"] is not None:
        c["planner"]["mpc"] = bool(cfg["mpc"])
    device = resolve_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    info = task_info(c["task"])
    world_model = make_world_model(c, info, device)
    world_model.load_state_dict(state["world_model"])
    discount = make_discount(c, info)
    env = make_env(c["task"], seed=cfg["seed"], num_envs=int(cfg["episodes"]), device=device)
    precision = cfg.get("precision") or c.get("precision", "fp32")
    planner = make_planner(c, world_model, env.action_spec_unbatched, discount,
                           make_autocast_dtype({"precision": precision}, device))
    env.append_transform(planner.primer())
    returns = evaluate(env, planner, info.episode_length)
    env.close()
    for i, r in enumerate(returns):
        print(f"episode {i}: return {r:.2f}")
    return {"checkpoint": str(path), "task": c["task"], "step": state["step"], "episodes": len(returns),
            "mean_return": sum(returns) / len(returns), "returns": returns}


@hydra.main(config_path="../configs", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        result = run(to_dict(cfg))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
