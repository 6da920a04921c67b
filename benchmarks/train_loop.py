"""End-to-end training throughput: env steps/s of the recipe's loop (collect with the planner, add, one update).

Example: python benchmarks/train_loop.py --task Pendulum-v1 --model 1m --envs 1 --steps 50 --threads 1
The buffer is first filled with ``--fill`` random steps (no timing), then one planned step and three updates run
untimed (they compile the planner and the update). Each timed iteration collects one batch of ``--envs`` env steps
with the planner and runs ``envs`` updates, as ``recipes/train.py`` does after its seed phase. Prints one JSON line:
env steps/s, the median ms of planning, of the rest of collecting (env step, transforms, collector), of sampling
the buffer and of the updates, and ``outside_share``: the fraction of the loop's time spent outside plan and update.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, sample_batch
from tdmpc2_trl.envs.factory import EnvFactory, task_info
from tdmpc2_trl.platform.precision import PRECISIONS, precision_name, resolve_precision
from tdmpc2_trl.run.make import make_discount, make_loss, make_planner, make_updater, make_world_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Pendulum-v1")
    p.add_argument("--model", default="1m", help="model preset (seed, 1m, 5m, ...)")
    p.add_argument("--horizon", type=int, default=None, help="default: the preset's")
    p.add_argument("--envs", type=int, default=1, help="envs planned for together (num_envs)")
    p.add_argument("--steps", type=int, default=50, help="timed loop iterations")
    p.add_argument("--fill", type=int, default=300, help="random steps put in the buffer first")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="planner.compile and optim.compile (default on)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def recipe_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe's config (its defaults) for this model, horizon and compile setting."""
    overrides = [f"model={args.model}", f"planner.compile={args.compile}", f"optim.compile={args.compile}"]
    return load_config("config", overrides + ([f"model.horizon={args.horizon}"] if args.horizon else []))


def _timed(fn, record: list[float]):
    """``fn`` that appends its wall time (ms) to ``record`` on each call."""

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        record.append((time.perf_counter() - start) * 1e3)
        return out

    return timed


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c, info, cpu = recipe_config(args), task_info(args.task), torch.device("cpu")
    dtype = resolve_precision(args.precision, cpu)
    discount = make_discount(c.loss, info)
    world_model = make_world_model(c.model, info, cpu)
    loss = make_loss(c.loss, world_model, discount)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        updater = make_updater(c.optim, loss, c.loss.tau, dtype)
    planner = make_planner(c.planner, world_model, None, discount, dtype, horizon=c.model.horizon)
    env = EnvFactory(args.task, seed=args.seed, num_envs=args.envs, transforms=(planner.primer(),))()
    buffer = make_replay_buffer(
        capacity=args.fill + args.envs * (args.steps + 1), batch_size=args.batch, horizon=c.model.horizon
    )
    collector = Collector(
        env,
        planner,
        frames_per_batch=args.envs,
        total_frames=-1,
        init_random_frames=args.fill,
        exploration_type=ExplorationType.RANDOM,
    )
    it = iter(collector)
    while len(buffer) < args.fill:
        add(buffer, next(it))
    add(buffer, next(it))  # one planned step, untimed: torch.compile compiles the planner here (planner.compile)
    for _ in range(3):  # untimed: optim.compile compiles the loss graphs here
        updater(sample_batch(buffer))
    plan_ms: list[float] = []
    planner.forward = _timed(planner.forward, plan_ms)  # the collector calls the planner through forward
    t_ms: dict[str, list[float]] = {"collect": [], "sample": [], "update": []}
    t0 = time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        add(buffer, next(it))
        t_ms["collect"].append((time.perf_counter() - t) * 1e3)
        for _ in range(args.envs):
            t = time.perf_counter()
            batch = sample_batch(buffer)
            t_ms["sample"].append((time.perf_counter() - t) * 1e3)
            updater(batch)
            t_ms["update"].append((time.perf_counter() - t) * 1e3 - t_ms["sample"][-1])
    elapsed = time.perf_counter() - t0
    collector.shutdown()
    inside = (sum(plan_ms) + sum(t_ms["update"])) / 1e3
    result = {
        "benchmark": "train_loop",
        "task": args.task,
        "model": args.model,
        "horizon": c.model.horizon,
        "envs": args.envs,
        "batch": args.batch,
        "precision": precision_name(dtype),
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "env_steps_per_s": round(args.steps * args.envs / elapsed, 3),
        "plan_median_ms": round(statistics.median(plan_ms), 1),
        "collect_other_median_ms": round(statistics.median(c - p for c, p in zip(t_ms["collect"], plan_ms)), 1),
        "sample_median_ms": round(statistics.median(t_ms["sample"]), 1),
        "update_median_ms": round(statistics.median(t_ms["update"]), 1),
        "outside_share": round(1 - inside / elapsed, 3),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
