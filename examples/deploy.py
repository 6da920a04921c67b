#!/usr/bin/env python
"""Run an exported planner (``python -m tdmpc2_trl.export``) in a fixed-rate control loop against a gymnasium env.

    python examples/deploy.py planner.pt2 --env Pendulum-v1 --rate 20 --steps 400 [--threads 2]

Needs torch, gymnasium and numpy only: this is what runs on the robot's computer (with the robot's own interface in
place of the gymnasium env). Every control period (1 / ``--rate`` s) it reads the observation, plans (the program
keeps its warm start; ``reset`` is True at an episode's first step), applies the action and sleeps until the next
tick. A step whose planning and env step overrun the period is a deadline miss; the loop then starts the next step
at once (it does not skip steps). Prints one JSON line: planning latency p50/p90/p99/max (ms), deadline misses, the
returns of the episodes finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("planner", help="the exported planner (.pt2)")
    p.add_argument("--env", default="Pendulum-v1", help="a gymnasium env id with the planner's sizes")
    p.add_argument("--rate", type=float, default=20.0, help="control rate (Hz)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import gymnasium as gym
    import numpy as np
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    planner = torch.export.load(a.planner).module()
    env = gym.make(a.env)
    obs, _ = env.reset(seed=a.seed)
    period = 1.0 / a.rate
    latencies, misses, returns, episode_return, first = [], 0, [], 0.0, True
    next_tick = time.perf_counter()
    with torch.inference_mode():
        for _ in range(a.steps):
            start = time.perf_counter()
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(1, -1)
            action = planner(x, torch.tensor([first]))[0].numpy()
            latencies.append((time.perf_counter() - start) * 1e3)
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            first = terminated or truncated
            if first:
                returns.append(episode_return)
                episode_return = 0.0
                obs, _ = env.reset()
            next_tick += period
            late = time.perf_counter() - next_tick
            if late > 0:  # the step overran its period: start the next one now
                misses += 1
                next_tick = time.perf_counter()
            else:
                time.sleep(-late)
    env.close()
    print(
        json.dumps(
            {
                "env": a.env,
                "rate_hz": a.rate,
                "steps": a.steps,
                "latency_ms": {
                    "p50": round(statistics.median(latencies), 2),
                    "p90": round(percentile(latencies, 90), 2),
                    "p99": round(percentile(latencies, 99), 2),
                    "max": round(max(latencies), 2),
                },
                "deadline_misses": misses,
                "episode_returns": [round(r, 2) for r in returns],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
