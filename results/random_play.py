"""Measure random play: the return of uniformly random actions in [-1, 1], through this project's envs.

    python results/random_play.py --episodes 10 cartpole-swingup walker-walk Pendulum-v1
    python results/random_play.py --episodes 10          # every task with an official curve, plus 3 gymnasium ones

Episode ``i`` runs on an env seeded ``i`` with torch seeded ``i`` (the actions); DMControl episodes are 500 decisions
with action repeat 2 (1000 frames), gymnasium ones end at termination or their time limit. Rows are added to (or
replace those of the same task in) ``results/random_play.csv``, which ``python -m tdmpc2_trl.results.plot`` reads.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.factory import make_env, task_info

HERE = Path(__file__).resolve().parent
COLUMNS = ["task", "episodes", "mean", "std", "source"]
GYM_TASKS = ["Pendulum-v1", "Hopper-v5", "Walker2d-v5"]


def episode_return(task: str, seed: int) -> float:
    """The return of one episode of uniformly random actions (env seed and torch seed ``seed``)."""
    torch.manual_seed(seed)
    env = make_env(task, seed=seed)
    try:
        rollout = env.rollout(task_info(task).episode_length, break_when_any_done=True)
    finally:
        env.close()
    return float(rollout["next", "reward"].sum())


def measure(task: str, episodes: int) -> dict[str, str]:
    """One CSV row: mean and sample standard deviation of ``episodes`` random episodes of ``task``."""
    returns = [episode_return(task, seed) for seed in range(episodes)]
    std = statistics.stdev(returns) if len(returns) > 1 else 0.0
    source = (
        f"measured: python results/random_play.py --episodes {episodes} (uniform actions in [-1, 1], "
        f"env and torch seeds 0-{episodes - 1})"
    )
    return {
        "task": task,
        "episodes": str(episodes),
        "mean": f"{statistics.fmean(returns):.1f}",
        "std": f"{std:.1f}",
        "source": source,
    }


def update_table(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``rows`` into the CSV at ``path``, replacing earlier rows of the same tasks, sorted by task."""
    table = {}
    if path.is_file():
        with open(path, newline="") as f:
            table = {r["task"]: r for r in csv.DictReader(f)}
    table.update({r["task"]: r for r in rows})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table[t] for t in sorted(table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "tasks", nargs="*", help=f"tasks (default: every task in results/official/ and {', '.join(GYM_TASKS)})"
    )
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "random_play.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tasks = args.tasks or [p.stem for p in sorted((HERE / "official").glob("*.csv"))] + GYM_TASKS
    try:
        for task in tasks:
            row = measure(task, args.episodes)
            update_table(args.out, [row])
            print(f"{task}: {row['mean']} ± {row['std']} over {args.episodes} episodes", flush=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
