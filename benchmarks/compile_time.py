"""Seconds each compiled graph of a preset costs at its first call (planner, world-model loss, policy loss), and
whether inductor's on-disk caches served it; one JSON line.

    TORCHINDUCTOR_CACHE_DIR=/tmp/ind python benchmarks/compile_time.py --model 8m-h10 --horizon 10   # cold
    TORCHINDUCTOR_CACHE_DIR=/tmp/ind python benchmarks/compile_time.py --model 8m-h10 --horizon 10   # warm

Run it twice with the same ``TORCHINDUCTOR_CACHE_DIR`` (an empty folder the first time): the first run is a cold
start, the second a new process on the same machine (what a user's second run sees). ``*_first_s`` is the first call
(compile + one call), ``*_next_s`` a second call: their difference is the compile. The world-model loss's backward
graphs compile during the first update's backward pass: they are in ``update_first_s``, not in ``world_model_loss_s``
(the forward graphs of the loss's pieces, summed). ``all_graphs_s``: both first calls less a later call of each.
``fxgraph_cache_hit``/``miss`` and ``autograd_cache_hit``/``miss`` are inductor's and AOTAutograd's counters: a warm
run that really hits its caches shows hits and no misses. ``--compile-scope iteration --planner-only``: the planner
compiled as its set-up and one MPPI iteration (``planner.compile_scope=iteration``), without the losses.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import plan as plan_bench
import torch
import update as update_bench
from torch._dynamo.utils import counters
from torchrl.envs import ExplorationType, set_exploration_type

from tdmpc2_trl.config.schema import COMPILE_SCOPES
from tdmpc2_trl.platform.compiling import on_compile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="8m-h10")
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--compile-scope", default="auto", choices=COMPILE_SCOPES, help="as planner.compile_scope")
    p.add_argument("--planner-only", action="store_true", help="the planner's graphs only (not the losses)")
    p.add_argument("--obs-dim", type=int, default=3, help="default: Pendulum-v1's; 18 for the seed robot's")
    p.add_argument("--action-dim", type=int, default=1, help="default: Pendulum-v1's; 4 for the seed robot's")
    return p.parse_args(argv)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (inductor's compile workers): less sensitive to other
    load on the machine than the wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 2)


def _sum_of(graphs: dict[str, float], prefix: str) -> float | None:
    """Seconds of the graphs whose name starts with ``prefix`` (a loss compiled as pieces: one entry each)."""
    found = [s for what, s in graphs.items() if what.startswith(prefix)]
    return round(sum(found), 2) if found else None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common = ["--model", args.model, "--horizon", str(args.horizon)]
    common += ["--obs-dim", str(args.obs_dim), "--action-dim", str(args.action_dim)]
    scope = ["--compile-scope", args.compile_scope]
    planner, td = plan_bench.build(plan_bench.parse_args(common + scope))
    updater, batch = (None, None) if args.planner_only else update_bench.build(update_bench.parse_args(common))
    graphs: dict[str, float] = {}
    started: dict[str, float] = {}
    on_compile(
        lambda what: started.__setitem__(what, time.perf_counter()),
        lambda what: graphs.__setitem__(what, round(time.perf_counter() - started[what], 2)),
    )
    try:
        with set_exploration_type(ExplorationType.RANDOM):
            cpu_started = cpu_seconds()
            plan_first = timed(lambda: plan_bench.call(planner, td))
            plan_first_cpu = round(cpu_seconds() - cpu_started, 1)
            plan_next = timed(lambda: plan_bench.call(planner, td))
        update_first = update_next = None
        if updater is not None:
            update_first, update_next = timed(lambda: updater(batch)), timed(lambda: updater(batch))
    finally:
        on_compile(None)
    result = {
        "benchmark": "compile_time",
        "model": args.model,
        "horizon": args.horizon,
        "threads": torch.get_num_threads(),
        "compile_scope": planner.compile_scope,  # as resolved ("auto": from the horizon)
        "planner_first_s": plan_first,
        "planner_first_cpu_s": plan_first_cpu,
        "planner_next_s": plan_next,
        "world_model_loss_s": _sum_of(graphs, "the world-model loss"),
        "policy_loss_s": _sum_of(graphs, "the policy loss"),
        "update_first_s": update_first,
        "update_next_s": update_next,
        # the budget: what the first planner call and the first update cost beyond a later one
        "all_graphs_s": None if update_first is None else round(plan_first - plan_next + update_first - update_next, 1),
        **{f"fxgraph_cache_{k}": counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss")},
        **{f"autograd_cache_{k}": counters["aot_autograd"][f"autograd_cache_{k}"] for k in ("hit", "miss")},
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
