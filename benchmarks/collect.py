"""Env steps per second of collection with the planner as policy, for each (workers, envs) setting given.

Example: python benchmarks/collect.py --model 1m --horizon 3 --workers 1 2 --envs 1 4 --frames 256
Each setting builds the recipe's collector (tdmpc2_trl.run.collectors.make_collector: one process for --workers 1,
a MultiSyncCollector or Ray actors otherwise) with untrained networks, collects --warmup batches untimed, then
--frames env steps (rounded up to whole batches of workers * envs) and prints one JSON line. No learning.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.envs.factory import EnvFactory, task_info
from tdmpc2_trl.platform.precision import precision_name
from tdmpc2_trl.run.collectors import make_collector
from tdmpc2_trl.run.make import make_autocast_dtype, make_discount, make_planner, make_world_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="1m", help="model preset (8m-h10, 1m, 5m, 19m, 48m, 317m)")
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--task", default="Pendulum-v1")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="collector processes (one setting each)")
    p.add_argument("--envs", type=int, nargs="+", default=[1], help="envs per worker (one setting each)")
    p.add_argument("--frames", type=int, default=256, help="timed env steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="more recipe overrides, e.g. planner.iterations=4")
    return p.parse_args(argv)


def recipe_config(args: argparse.Namespace, workers: int, envs: int) -> TrainConfig:
    """The training recipe's config (configs/config.yaml) for one setting, as ``train`` would get it."""
    overrides = [
        f"model={args.model}",
        f"model.horizon={args.horizon}",
        f"task={args.task}",
        f"num_envs={envs}",
        f"seed={args.seed}",
        f"threads={args.threads}",
        f"precision={args.precision}",
        f"collector.workers={workers}",
        f"collector.backend={args.backend}",
        *args.overrides,
    ]
    if args.ray_address:
        overrides.append(f"collector.ray_address={args.ray_address}")
    return load_config("config", overrides)


def measure(args: argparse.Namespace, workers: int, envs: int) -> dict:
    c = recipe_config(args, workers, envs)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)  # a multi-process collector's shutdown raises the main's threads
    torch.manual_seed(args.seed)
    info = task_info(args.task)
    world_model = make_world_model(c.model, info, device)
    autocast_dtype = make_autocast_dtype(c.precision, device)
    planner = make_planner(
        c.planner, world_model, None, make_discount(c.loss, info), autocast_dtype, horizon=c.model.horizon
    )
    env = EnvFactory(args.task, seed=args.seed, num_envs=envs, device=str(device), transforms=(planner.primer(),))
    per_batch = workers * envs
    batches = args.warmup + -(-args.frames // per_batch)
    start = time.perf_counter()
    collector = make_collector(
        env,
        c.collector,
        planner,
        total_frames=batches * per_batch,
        init_random_frames=0,
        device=device,
        threads=args.threads,
    )
    setup_s = time.perf_counter() - start
    timed = 0
    try:
        for i, data in enumerate(collector):
            if i == args.warmup:
                start = time.perf_counter()
            if i >= args.warmup:
                timed += data.numel()
        elapsed = time.perf_counter() - start
    finally:
        collector.shutdown()
    return {
        "benchmark": "collect",
        "task": args.task,
        "model": args.model,
        "horizon": args.horizon,
        "backend": args.backend,
        "workers": workers,
        "envs": envs,
        "envs_total": per_batch,
        "frames": timed,
        "steps_per_s": round(timed / elapsed, 2),
        "ms_per_batch": round(elapsed / (timed / per_batch) * 1e3, 1),
        "setup_s": round(setup_s, 1),
        "threads": args.threads,
        "device": str(device),
        "precision": precision_name(autocast_dtype),
        "samples": c.planner.num_samples,
        "iterations": c.planner.iterations,
        "compile": c.planner.compile,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for workers, envs in itertools.product(args.workers, args.envs):
        results.append(measure(args, workers, envs))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
