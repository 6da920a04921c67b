"""Reduce published per-seed learning curves of SAC and TD3 (Hopper, Walker2d) to ``gym_mujoco.csv``.

    python results/published/reduce_gym_mujoco.py --td3 TD3_REPO --tianshou TIANSHOU_REPO [--out FILE]

TD3_REPO is a checkout of https://github.com/sfujim/TD3 (commit bc98e62 or later; ``learning_curves/`` is unchanged
since), TIANSHOU_REPO a checkout of https://github.com/thu-ml/tianshou at commit 39acf20 (the merged CSVs were
removed again in be2e3ec). Each output row is the mean and sample standard deviation over the seeds of one source
at one count of *total* environment steps (random warm-up steps included), every 25,000 steps up to 200,000, except
a point at which no update has been made yet (an evaluation of the untrained policy at the end of the random
warm-up; Tianshou TD3 at 25,000). See README.md next to this file for what the sources measured.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = range(25_000, 200_001, 25_000)
TASKS = {"Hopper": "Hopper-v5", "Walker2d": "Walker2d-v5"}  # source env name -> this project's task
COLUMNS = ["task", "algorithm", "step", "mean", "std", "seeds", "episodes", "env_version", "source", "reference"]
EPISODES = 10  # both sources average 10 evaluation episodes per point (README.md)

TD3_PAPER = "TD3 paper"
TD3_REFERENCE = (
    "Fujimoto et al. 2018 (ICML), released curves: https://github.com/sfujim/TD3 "
    "learning_curves/ at bc98e6260e4e35e1a2afc1c78b6925251dd0a1e9"
)
TD3_EVAL_EVERY = 5_000  # index i of each array: the evaluation at i * 5000 total steps (index 0: untrained)
TD3_WARMUP = 1_000  # the paper's random steps on Hopper and Walker2d; its 25k point is well past them
TIANSHOU = "Tianshou benchmark"
TIANSHOU_REFERENCE = (
    "Tianshou MuJoCo benchmark (Weng et al. 2022, JMLR), merged per-seed CSVs: "
    "https://github.com/thu-ml/tianshou examples/mujoco/benchmark/ENV/ALGO/test_rew_10seeds.csv "
    "at 39acf2094d96268d92ebb54dcbfc3de76d702567"
)
TIANSHOU_WARMUP = {"SAC": 10_000, "TD3": 25_000}  # random steps collected before the trainer's env_step counts


@dataclass(frozen=True)
class Point:
    task: str
    algorithm: str
    step: int
    values: list[float]
    env_version: str
    source: str
    reference: str

    def row(self) -> list[str]:
        return [
            self.task,
            self.algorithm,
            str(self.step),
            f"{statistics.fmean(self.values):.1f}",
            f"{statistics.stdev(self.values):.1f}",
            str(len(self.values)),
            str(EPISODES),
            self.env_version,
            self.source,
            self.reference,
        ]


def td3_paper(repo: Path) -> list[Point]:
    """TD3 on Hopper-v1 and Walker2d-v1, 10 seeds: ``learning_curves/<dir>/TD3_<env>-v1_<seed>.npy``."""
    points = []
    for env, folder in (("Hopper", "Hopper"), ("Walker2d", "Walker")):
        files = sorted((repo / "learning_curves" / folder).glob(f"TD3_{env}-v1_*.npy"))
        if not files:
            raise FileNotFoundError(f"no TD3_{env}-v1_*.npy under {repo / 'learning_curves' / folder}")
        curves = [np.load(f) for f in files]
        for step in (s for s in STEPS if s > TD3_WARMUP):
            values = [float(c[step // TD3_EVAL_EVERY]) for c in curves]
            points.append(Point(TASKS[env], "TD3", step, values, f"{env}-v1", TD3_PAPER, TD3_REFERENCE))
    return points


def tianshou(repo: Path) -> list[Point]:
    """SAC and TD3 on Hopper-v3 and Walker2d-v3, 10 seeds: the per-seed ``rew:seed_*`` columns of the merged CSVs,
    whose ``env_step`` leaves out the random warm-up steps (so total steps = env_step + warm-up)."""
    points = []
    for env in TASKS:
        for algorithm, warmup in TIANSHOU_WARMUP.items():
            path = repo / "examples/mujoco/benchmark" / f"{env}-v3" / algorithm.lower() / "test_rew_10seeds.csv"
            with open(path, newline="") as f:
                rows = {int(float(r["env_step"])): r for r in csv.DictReader(f)}
            # env_step 0 is evaluated before the first update: an untrained policy, not a reference
            for step in (s for s in STEPS if s > warmup):
                row = rows[step - warmup]
                values = [float(v) for k, v in row.items() if k.startswith("rew:seed_")]
                points.append(Point(TASKS[env], algorithm, step, values, f"{env}-v3", TIANSHOU, TIANSHOU_REFERENCE))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--td3", type=Path, required=True, help="checkout of sfujim/TD3")
    parser.add_argument("--tianshou", type=Path, required=True, help="checkout of thu-ml/tianshou at 39acf20")
    parser.add_argument("--out", type=Path, default=HERE / "gym_mujoco.csv")
    args = parser.parse_args(argv)
    points = sorted(
        td3_paper(args.td3) + tianshou(args.tianshou), key=lambda p: (p.task, p.algorithm, p.source, p.step)
    )
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(p.row() for p in points)
    print(f"wrote {len(points)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
