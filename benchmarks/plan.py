"""Time one TD-MPC2 planner call (MPPI over B envs at once) and print one JSON line with the figures.

Example: python benchmarks/plan.py --model 8m-h10 --horizon 10 --envs 16 --iters 5 --warmup 1
GFLOP/s counts the matmul FLOPs of one call (torch.utils.flop_counter, counted once) over its median time.
"""

from __future__ import annotations

import argparse
import json

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch
from _common import count_flops, memory_fields, time_calls, timing_fields, warmup_fields
from tensordict import TensorDict
from torchrl.envs import ExplorationType, set_exploration_type

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import COMPILE_SCOPES
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.platform.precision import PRECISIONS, precision_name, resolve_precision
from tdmpc2_trl.run.make import make_autocast_dtype  # as a run: TF32 for fp32 matmuls on CUDA


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="8m-h10", help="model preset (8m-h10, 1m, 5m, 19m, 48m, 317m)")
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--envs", type=int, default=1, help="environments planned for in one call")
    p.add_argument("--obs-dim", type=int, default=18)
    p.add_argument("--action-dim", type=int, default=4)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--pi-trajs", type=int, default=24)
    p.add_argument("--elites", type=int, default=64)
    p.add_argument("--iterations", type=int, default=6, help="MPPI iterations per call")
    p.add_argument("--iters", type=int, default=10, help="timed planner calls")
    p.add_argument("--warmup", type=int, default=2, help="untimed planner calls first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--episodic", action="store_true", help="world model with a termination head in use")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16: matmuls under autocast; auto: bf16 where it is fast here (precision.py)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TDMPC2Planner(compile_plan=...), as planner.compile (default on; warm up with >= 2 calls)",
    )
    p.add_argument("--compile-scope", default="auto", choices=COMPILE_SCOPES, help="as planner.compile_scope")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[TDMPC2Planner, TensorDict]:
    torch.manual_seed(args.seed)
    cfg = load_model_config(args.model)
    wm = WorldModel(cfg, args.obs_dim, args.action_dim, episodic=args.episodic).to(args.device)
    planner = TDMPC2Planner(
        wm,
        discount=0.99,
        horizon=args.horizon,
        num_samples=args.samples,
        num_pi_trajs=args.pi_trajs,
        num_elites=args.elites,
        iterations=args.iterations,
        compile_plan=args.compile,
        compile_scope=args.compile_scope,
        autocast_dtype=make_autocast_dtype(args.precision, torch.device(args.device)),
    )
    B = args.envs
    td = TensorDict(
        observation=torch.randn(B, args.obs_dim),
        planner_mean=torch.zeros(B, args.horizon, args.action_dim),
        batch_size=[B],
        device=args.device,
    )
    return planner, td


def call(planner: TDMPC2Planner, td: TensorDict) -> TensorDict:
    out = planner(td.clone(False))
    td.set("planner_mean", out.get(("next", "planner_mean")))  # warm start as in a rollout
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    planner, td = build(args)
    with set_exploration_type(ExplorationType.RANDOM):
        warmup_ms = time_calls(lambda: call(planner, td), max(args.warmup, 1), args.device)
        ms = time_calls(lambda: call(planner, td), args.iters, args.device)
        flops = count_flops(lambda: call(planner, td))  # last: compiled code is re-traced under the counter
    result = {
        "benchmark": "plan",
        "model": args.model,
        "horizon": args.horizon,
        "envs": args.envs,
        "obs_dim": args.obs_dim,
        "action_dim": args.action_dim,
        "samples": args.samples,
        "pi_trajs": args.pi_trajs,
        "elites": args.elites,
        "iterations": args.iterations,
        "episodic": args.episodic,
        "compile": args.compile,
        "compile_scope": planner.compile_scope,  # as resolved ("auto": from the horizon)
        "device": args.device,
        "threads": torch.get_num_threads(),
        "precision": precision_name(resolve_precision(args.precision, torch.device(args.device))),
        "iters": args.iters,
        "warmup": args.warmup,
        **timing_fields(ms, flops, "call"),
        **warmup_fields(warmup_ms),
        **memory_fields(args.device),
    }
    result["ms_per_env"] = round(result["median_ms"] / args.envs, 2)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
