"""End-to-end runs of recipes/train.py and recipes/eval.py with tiny networks (CI-sized)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.num_q=2",
    "model.horizon=3",
    "buffer.batch_size=16",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=2",
    "planner.compile=false",
    "optim.compile=false",
    "progress=false",
]


def run(script: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / script), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(tmp_path: Path, *overrides: str) -> Path:
    run_dir = tmp_path / "run"
    run("train.py", *TINY, f"hydra.run.dir={run_dir}", *overrides)
    return run_dir


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pendulum")
    return train(
        tmp,
        "task=Pendulum-v1",
        "steps=300",
        "collector.seed_steps=200",
        "eval.freq=200",
        "eval.episodes=2",
        "checkpoint_freq=200",
    )


@pytest.mark.slow
def test_train_writes_run_directory(pendulum_run: Path):
    assert (pendulum_run / "config.yaml").is_file()
    evals = read_csv(pendulum_run / "eval.csv")
    assert list(evals[0]) == ["step", "episode_reward"]
    assert [int(r["step"]) for r in evals] == [200, 300]
    assert all(-2000 < float(r["episode_reward"]) <= 0 for r in evals)  # Pendulum returns are negative
    train_rows = read_csv(pendulum_run / "train.csv")
    assert len(train_rows) >= 1 and "episode_reward" in train_rows[0]
    assert sorted(p.name for p in (pendulum_run / "checkpoints").glob("*.pt")) == [
        "step_000000200.pt",
        "step_000000300.pt",
    ]


@pytest.mark.slow
def test_eval_recipe_prints_json_mean(pendulum_run: Path):
    proc = run("eval.py", f"checkpoint={pendulum_run}", "episodes=2")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["step"] == 300
    assert result["mean_return"] == pytest.approx(sum(result["returns"]) / 2)


@pytest.mark.slow
def test_resume_continues_from_saved_step(pendulum_run: Path, tmp_path: Path):
    proc = run("train.py", *TINY, f"resume={pendulum_run}", "steps=400", "eval.freq=0", "eval.episodes=1")
    assert "at step 300" in proc.stdout
    assert (pendulum_run / "checkpoints" / "step_000000400.pt").is_file()
    assert [int(r["step"]) for r in read_csv(pendulum_run / "eval.csv")][-1] == 400


@pytest.mark.slow
def test_num_envs_2(tmp_path: Path):
    """Two envs planned for at once, through the default compiled planner (the other tests plan eagerly)."""
    run_dir = tmp_path / "run"
    compiled = [o for o in TINY if o != "planner.compile=false"] + ["planner.compile=true"]
    proc = run(
        "train.py",
        *compiled,
        f"hydra.run.dir={run_dir}",
        "task=Pendulum-v1",
        "num_envs=2",
        "steps=440",
        "collector.seed_steps=400",
        "eval.freq=0",
        "eval.episodes=2",
        "checkpoint_freq=0",
    )
    assert "torch.compile of the planner failed" not in proc.stderr
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [440]
    assert len(read_csv(run_dir / "train.csv")) == 2  # two 200-step episodes ended at once (one per env)


@pytest.mark.slow
def test_dmc_family(tmp_path: Path):
    run_dir = train(
        tmp_path,
        "task=cartpole-swingup",
        "steps=120",
        "collector.seed_steps=100",
        "eval.freq=0",
        "eval.episodes=1",
        "checkpoint_freq=0",
    )
    evals = read_csv(run_dir / "eval.csv")
    assert len(evals) == 1 and 0 <= float(evals[0]["episode_reward"]) <= 500


@pytest.mark.slow
def test_unknown_task_gives_one_line_error(tmp_path: Path):
    """A task is checked when the run builds its env (bad settings: tests/test_config_errors.py)."""
    proc = run("train.py", *TINY, f"hydra.run.dir={tmp_path / 'bad'}", "task=NoSuchTask-v0", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "unknown task 'NoSuchTask-v0'" in proc.stderr
