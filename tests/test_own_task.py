"""README "Your own task": recipes/train.py trains examples/my_robot_env.py (18 obs, 4 actions in a Box of ±3/±1.5,
termination) by its ``module:EnvId`` name, with CI-sized networks."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TASK = "my_robot_env:MyRobot-v0"
SMALL = [
    "model=1m",
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.horizon=3",
    "buffer.batch_size=16",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=2",
    "planner.compile=false",
    "optim.compile=false",
    "progress=false",
    "threads=1",
    "precision=fp32",
    "steps=300",
    "collector.seed_steps=100",
    "eval.freq=0",
    "eval.episodes=1",
    "checkpoint_freq=1000",
]


def test_my_robot_env_has_the_documented_shapes():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import gymnasium as gym
        import my_robot_env  # noqa: F401  (registers MyRobot-v0)
    finally:
        sys.path.remove(str(EXAMPLES))
    env = gym.make("MyRobot-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (18,) and env.action_space.shape == (4,)
    assert not np.allclose(env.action_space.high, 1.0)
    _, _, terminated, _, _ = env.step(env.action_space.high)  # full torque on every joint
    for _ in range(200):
        if terminated:
            break
        _, _, terminated, _, _ = env.step(env.action_space.high)
    assert terminated  # the arm reaches its joint stop: the episode terminates before the time limit


@pytest.mark.slow
def test_train_recipe_trains_my_robot_env(tmp_path: Path):
    run_dir = tmp_path / "run"
    path = os.pathsep.join(p for p in (str(EXAMPLES), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train.py"), f"task={TASK}", *SMALL, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(run_dir / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [300]  # the final evaluation
    assert np.isfinite(float(rows[0]["episode_reward"]))
