"""bf16 vs fp32 planning on a trained model: the same observations and the same recorded MPPI noise, both precisions.

Example: python benchmarks/precision_check.py --checkpoint runs/Pendulum-v1/1m/seed1/... --states 256
Prints one JSON line: the mean/max absolute difference of the planned actions (deterministic, no exploration noise)
and the mean absolute difference of the policy prior's mean action. Observations come from the checkpoint's replay
buffer (states the agent actually visited).
"""

from __future__ import annotations

import argparse
import json

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch

from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.data.replay_buffer import make_replay_buffer
from tdmpc2_trl.envs.factory import task_info
from tdmpc2_trl.planning.planner import PlannerNoise
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
from tdmpc2_trl.platform.precision import autocast
from tdmpc2_trl.run import resolve
from tdmpc2_trl.run.make import make_discount, make_planner, make_world_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    p.add_argument("--states", type=int, default=256, help="observations sampled from the replay buffer")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path, state = resolve_checkpoint(args.checkpoint)
    c = to_dataclass(state["config"], TrainConfig)
    info, cpu = task_info(c.task), torch.device("cpu")
    world_model = make_world_model(c.model, info, cpu)
    world_model.load_state_dict(state["world_model"])
    buffer = make_replay_buffer(
        capacity=resolve.buffer_size(c.buffer.size, c.steps),  # the run's own capacity
        batch_size=c.buffer.batch_size,
        horizon=c.model.horizon,
    )
    buffer.load_state_dict(state["replay_buffer"])
    visited = buffer.storage[:]["observation"]  # the filled rows only
    obs_all = visited.reshape(-1, *visited.shape[2:])
    g = torch.Generator().manual_seed(args.seed)
    obs = obs_all[torch.randint(len(obs_all), (args.states,), generator=g)].float()

    planners = {
        name: make_planner(c.planner, world_model, None, make_discount(c.loss, info), dtype, horizon=c.model.horizon)
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))
    }
    noise = PlannerNoise(planners["fp32"], args.states, generator=g)
    actions = {name: p.act(obs, None, noise=noise, explore=False)[0] for name, p in planners.items()}
    with torch.no_grad():
        prior = {}
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            with autocast(cpu, dtype):
                prior[name] = world_model.pi(world_model.encode(obs))[1]
    diff = (actions["bf16"] - actions["fp32"]).abs()
    result = {
        "benchmark": "precision_check",
        "checkpoint": str(path),
        "task": c.task,
        "model": c.model.name,
        "step": state["step"],
        "states": args.states,
        "plan_action_mean_abs_diff": round(float(diff.mean()), 5),
        "plan_action_max_abs_diff": round(float(diff.max()), 5),
        "plan_action_mean_abs": round(float(actions["fp32"].abs().mean()), 5),
        "prior_action_mean_abs_diff": round(float((prior["bf16"] - prior["fp32"]).abs().mean()), 5),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
