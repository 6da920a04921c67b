"""examples/pendulum_torchrl.py (plain TorchRL GymEnv + Collector + this project's parts) runs end to end."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    "--steps",
    "200",
    "--seed-steps",
    "100",
    "--batch-size",
    "16",
    "--num-samples",
    "32",
    "--iterations",
    "2",
    "--eval-episodes",
    "1",
    "--eval-steps",
    "30",
    "--threads",
    "1",
]


@pytest.mark.slow
def test_pendulum_example_collects_updates_evaluates_beyond_unit_torque():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # this checkout's package
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pendulum_torchrl.py"), *SHORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    torque = re.search(r"max \|torque\| from the planner: ([0-9.]+)", proc.stdout)
    returns = re.search(r"eval return: (-?[0-9.]+)", proc.stdout)
    assert torque and returns, proc.stdout[-3000:]
    assert 1.0 < float(torque.group(1)) <= 2.0  # Pendulum's torque range is [-2, 2]: the planner used beyond ±1
    assert -16.3 * 30 <= float(returns.group(1)) <= 0  # Pendulum's reward per step lies in [-16.3, 0]
