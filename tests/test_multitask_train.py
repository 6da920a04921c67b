"""A multitask run in-process: envs of tasks with different sizes in one batched planner, per-task evaluation,
the task set in the checkpoint, fine-tuning from it, and the one-line errors of bad task lists."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint
from tdmpc2_trl.run.finetune import checkpoint_task_set
from tdmpc2_trl.run.trainer import train

TINY = [
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
    "checkpoint_freq=0",
    "threads=1",
]
TASKS = "tasks=[Pendulum-v1,Reacher-v5]"  # obs 3 and 10, actions 1 and 2; episodes of 200 and 50 steps


def eval_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_multitask_run_evaluates_each_task_and_saves_its_task_set(tmp_path: Path):
    cfg = load_config("config", [*TINY, TASKS, "steps=160", "collector.seed_steps=120", "eval.freq=0"])
    train(cfg, tmp_path / "run")
    rows = eval_rows(tmp_path / "run")
    assert [(r["step"], r["task"]) for r in rows] == [("160", "Pendulum-v1"), ("160", "Reacher-v5")]
    assert all(r["episode_reward"] not in ("", "nan") for r in rows)
    _, state = resolve_checkpoint(tmp_path / "run")
    task_set = checkpoint_task_set(state)
    assert task_set.names == ["Pendulum-v1", "Reacher-v5"] and (task_set.obs_dim, task_set.action_dim) == (10, 2)
    stored = state["replay_buffer"]

    # a resumed run must keep the task set
    other = load_config("config", [*TINY, "tasks=[Pendulum-v1]", "steps=200", f"resume={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="tasks"):
        train(other, tmp_path / "run")

    # fine-tune on one known and one new task from the multitask checkpoint
    tuned = load_config(
        "config",
        [
            *TINY,
            "tasks=[Reacher-v5,MountainCarContinuous-v0]",
            "steps=130",
            "collector.seed_steps=120",
            "eval.freq=0",
            f"init_from={tmp_path / 'run'}",
        ],
    )
    train(tuned, tmp_path / "tuned")
    _, tuned_state = resolve_checkpoint(tmp_path / "tuned")
    assert checkpoint_task_set(tuned_state).obs_dim == 10  # the checkpoint's padded sizes
    assert [r["task"] for r in eval_rows(tmp_path / "tuned")] == ["Reacher-v5", "MountainCarContinuous-v0"]
    assert stored is not None


def test_bad_task_lists_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="continuous"):
        train(load_config("config", [*TINY, "tasks=[Pendulum-v1,CartPole-v1]", "steps=10"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="twice"):
        load_config("config", [*TINY, "tasks=[Pendulum-v1,Pendulum-v1]"])
    with pytest.raises(ConfigError, match="leave loss.discount null"):
        load_config("config", [*TINY, "tasks=[Pendulum-v1]", "loss.discount=0.9"])
    with pytest.raises(ConfigError, match="single-task runs only"):
        load_config("config", [*TINY, "tasks=[Pendulum-v1]", "eval.save_video=true"])
    with pytest.raises(ConfigError, match="give tasks"):
        load_config("config", [*TINY, f"init_from={tmp_path}"])
    with pytest.raises(ConfigError, match="not a multitask checkpoint|no checkpoint"):
        train(load_config("config", [*TINY, "tasks=[Pendulum-v1]", f"init_from={tmp_path}"]), tmp_path / "b")


def test_eval_recipe_reports_each_task_of_a_multitask_checkpoint(tmp_path: Path, load_recipe):
    train(
        load_config("config", [*TINY, TASKS, "steps=130", "collector.seed_steps=120", "eval.freq=0"]), tmp_path / "run"
    )
    recipe = load_recipe("eval")
    result = recipe.run(load_config("eval", [f"checkpoint={tmp_path / 'run'}", "episodes=2", "seed=3"]))
    assert result["task"] == ["Pendulum-v1", "Reacher-v5"] and result["episodes"] == 4
    pendulum, reacher = result["returns"][:2], result["returns"][2:]  # task-major
    assert result["task_mean_returns"] == pytest.approx(
        {"Pendulum-v1": sum(pendulum) / 2, "Reacher-v5": sum(reacher) / 2}
    )
    assert all(-2000 < r <= 0 for r in pendulum) and all(-200 < r <= 0 for r in reacher)  # negative-reward tasks
    with pytest.raises(ConfigError, match="save_video records single-task checkpoints only"):
        recipe.run(load_config("eval", [f"checkpoint={tmp_path / 'run'}", "save_video=true"]))
