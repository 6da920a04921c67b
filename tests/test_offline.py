"""Offline training in-process: a dataset exported from a finished run trains an agent that is evaluated online on
each task; resume; a dataset whose tasks differ from tasks= is a one-line error."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.data.offline_dataset import export_runs
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
from tdmpc2_trl.run import interrupts
from tdmpc2_trl.run.finetune import checkpoint_task_set
from tdmpc2_trl.run.offline import OfflineRun, train_offline
from tdmpc2_trl.run.trainer import train

SMALL = [
    "model=1m",
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.task_dim=8",
    "buffer.batch_size=16",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=2",
    "planner.compile=false",
    "optim.compile=false",
    "progress=false",
    "precision=fp32",
    "eval.episodes=1",
    "threads=1",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    train(
        load_config(
            "config",
            [*SMALL, "task=Pendulum-v1", "steps=220", "collector.seed_steps=200", "eval.freq=0", "checkpoint_freq=0"],
        ),
        root / "run",
    )
    return export_runs([root / "run"], root / "data")


def test_offline_run_evaluates_checkpoints_and_resumes(dataset: Path, tmp_path: Path):
    cfg = load_config(
        "offline",
        [*SMALL, f"dataset={dataset}", "tasks=[Pendulum-v1]", "steps=40", "eval.freq=20", "checkpoint_freq=0"],
    )
    train_offline(cfg, tmp_path / "off")
    with open(tmp_path / "off" / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["task"]) for r in rows] == [("20", "Pendulum-v1"), ("40", "Pendulum-v1")]
    _, state = resolve_checkpoint(tmp_path / "off")
    assert state["step"] == 40 and checkpoint_task_set(state).names == ["Pendulum-v1"]

    more = load_config(
        "offline", [*SMALL, f"dataset={dataset}", "steps=50", "eval.freq=0", f"resume={tmp_path / 'off'}"]
    )
    train_offline(more, tmp_path / "off")
    _, state = resolve_checkpoint(tmp_path / "off")
    assert state["step"] == 50


def test_tasks_must_match_the_dataset(dataset: Path, tmp_path: Path):
    cfg = load_config("offline", [*SMALL, f"dataset={dataset}", "tasks=[cartpole-swingup]", "steps=5"])
    with pytest.raises(ConfigError, match="differ from the dataset"):
        train_offline(cfg, tmp_path / "x")


@pytest.fixture
def signal_handlers(restore_signal_handlers):
    """The recipe's SIGINT/SIGTERM handlers for one test; pytest's handlers and a fresh ``Stop`` afterwards."""
    interrupts.install()
    yield
    interrupts.Stop.signum, interrupts.Stop.deferred = 0, 1


def test_sigterm_checkpoints_with_one_line_and_resumes(
    dataset: Path, tmp_path: Path, signal_handlers, monkeypatch, capsys
):
    """SIGTERM during the evaluation at update 20: one line (no traceback), a checkpoint at 20, resume to 30."""
    evaluate = OfflineRun.evaluate

    def evaluate_then_sigterm(run: OfflineRun, write) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        evaluate(run, write)

    monkeypatch.setattr(OfflineRun, "evaluate", evaluate_then_sigterm)
    run_dir = tmp_path / "off"
    train_offline(
        load_config(
            "offline",
            [*SMALL, f"dataset={dataset}", "tasks=[Pendulum-v1]", "steps=40", "eval.freq=20", "checkpoint_freq=0"],
        ),
        run_dir,
    )
    out, err = capsys.readouterr()
    assert f"interrupted at update 20: checkpoint {run_dir}" in out and "Traceback" not in out + err, out + err
    assert resolve_checkpoint(run_dir)[1]["step"] == 20

    monkeypatch.setattr(OfflineRun, "evaluate", evaluate)
    interrupts.Stop.signum, interrupts.Stop.deferred = 0, 1
    train_offline(
        load_config("offline", [*SMALL, f"dataset={dataset}", "steps=30", "eval.freq=0", f"resume={run_dir}"]), run_dir
    )
    assert resolve_checkpoint(run_dir)[1]["step"] == 30


def test_eval_recipe_reads_an_offline_checkpoint(dataset: Path, tmp_path: Path, load_recipe):
    """recipes/eval.py on an offline run: its config has ``dataset`` and no ``task``; the task set says what to run."""
    train_offline(load_config("offline", [*SMALL, f"dataset={dataset}", "steps=10", "eval.freq=0"]), tmp_path / "off")
    result = load_recipe("eval").run(load_config("eval", [f"checkpoint={tmp_path / 'off'}", "episodes=2"]))
    assert result["task"] == ["Pendulum-v1"] and result["step"] == 10 and len(result["returns"]) == 2
    assert -2000 < result["task_mean_returns"]["Pendulum-v1"] <= 0
