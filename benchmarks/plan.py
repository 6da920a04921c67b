"""Time one TD-MPC2 planner call (MPPI over B envs at once) and print one JSON line with the figures.

Example: python benchmarks/plan.py --model seed --horizon 10 --envs 16 --iters 5 --warmup 1
GFLOP/s counts the matmul FLOPs of one call (torch.utils.flop_counter, counted once) over its median time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from tensordict import TensorDict
from torch.utils.flop_counter import FlopCounterMode
from torchrl.envs import ExplorationType, set_exploration_type

from tdmpc2_trl.modules import WorldModel
from tdmpc2_trl.planner import TDMPC2Planner
from tdmpc2_trl.presets import load_model_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed", help="model preset (seed, 1m, 5m, 19m, 48m, 317m)")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="TDMPC2Planner(compile_step=True); warm up with >= 2 calls")
    p.add_argument("--fast-mish", action="store_true",
                   help="experiment: patch nn.Mish with the one-exp closed form (a proposal for tdmpc2_trl.nn)")
    return p.parse_args(argv)


def fast_mish(x: torch.Tensor) -> torch.Tensor:
    """``x·tanh(softplus(x)) = x − 2x / (e^x(e^x + 2) + 2)``: one exp instead of exp, log1p and tanh."""
    e = torch.exp(x.clamp(max=20.0))
    return torch.addcdiv(x, x, (e + 2).mul_(e).add_(2), value=-2.0)


def build(args: argparse.Namespace) -> tuple[TDMPC2Planner, TensorDict]:
    torch.manual_seed(args.seed)
    cfg = load_model_config(args.model)
    wm = WorldModel(cfg, args.obs_dim, args.action_dim, episodic=args.episodic).to(args.device)
    planner = TDMPC2Planner(wm, discount=0.99, horizon=args.horizon, num_samples=args.samples,
                            num_pi_trajs=args.pi_trajs, num_elites=args.elites, iterations=args.iterations,
                            compile_step=args.compile)
    B = args.envs
    td = TensorDict(observation=torch.randn(B, args.obs_dim), planner_mean=torch.zeros(B, args.horizon, args.action_dim),
                    batch_size=[B], device=args.device)
    return planner, td


def call(planner: TDMPC2Planner, td: TensorDict) -> TensorDict:
    out = planner(td.clone(False))
    td.set("planner_mean", out.get(("next", "planner_mean")))  # warm start as in a rollout
    return out


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, which fails on TensorDictParams (the Q ensemble's weights)."""

    parents = {"Global"}

    def __enter__(self) -> "_NoModuleTracking":
        return self

    def __exit__(self, *args) -> None:
        return None


def count_flops(planner: TDMPC2Planner, td: TensorDict) -> int:
    """Matmul FLOPs of one planner call."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        call(planner, td)
    return counter.get_total_flops()


def timed(planner: TDMPC2Planner, td: TensorDict, iters: int, device: str) -> list[float]:
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        call(planner, td)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast_mish:
        for cls in {torch.nn.Mish, *torch.nn.Mish.__subclasses__()}:  # tdmpc2_trl.nn.Mish overrides forward
            cls.forward = lambda self, x: fast_mish(x)
    planner, td = build(args)
    with set_exploration_type(ExplorationType.RANDOM):
        timed(planner, td, args.warmup, args.device)
        ms = timed(planner, td, args.iters, args.device)
        flops = count_flops(planner, td)  # last: under the counter's dispatch mode compiled code is re-traced
    median = statistics.median(ms)
    result = {
        "benchmark": "plan", "model": args.model, "horizon": args.horizon, "envs": args.envs,
        "obs_dim": args.obs_dim, "action_dim": args.action_dim, "samples": args.samples,
        "pi_trajs": args.pi_trajs, "elites": args.elites, "iterations": args.iterations,
        "episodic": args.episodic, "fast_mish": args.fast_mish, "compile": args.compile,
        "device": args.device, "threads": torch.get_num_threads(),
        "iters": args.iters, "warmup": args.warmup,
        "median_ms": round(median, 2), "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2),
        "ms_per_env": round(median / args.envs, 2),
        "gflop_per_call": round(flops / 1e9, 2), "gflops": round(flops / 1e9 / (median / 1e3), 1),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
