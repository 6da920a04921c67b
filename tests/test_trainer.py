"""The training loop in-process (tdmpc2_trl/run/trainer.py), the env seam (envs.EnvFactory) and start-up messages."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest
import torch

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.data.replay_buffer import EpisodeEndSliceSampler
from tdmpc2_trl.envs.factory import EnvFactory
from tdmpc2_trl.platform.compiling import EagerOnFailure, compiling_deferred, on_compile
from tdmpc2_trl.run.collectors import WorkerEnv
from tdmpc2_trl.run.trainer import Run, train

TINY = [
    "model=1m",
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.num_q=2",
    "buffer.batch_size=16",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=2",
    "planner.compile=false",
    "optim.compile=false",
    "progress=false",
    "precision=fp32",
]


def test_train_in_process_writes_the_run_directory(tmp_path: Path, capsys):
    cfg = load_config(
        "config",
        [*TINY, "steps=120", "collector.seed_steps=100", "eval.freq=0", "eval.episodes=1", "checkpoint_freq=0"],
    )
    train(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    assert out.startswith("building the env, the networks and the replay buffer for Pendulum-v1 (model 1m)")
    assert "first 100 env steps with random actions" in out
    # the phases in order (progress=false keeps these lines and drops the bar), the evaluation as it came
    lines = out.splitlines()
    burst = lines.index("initial burst: 100 updates on the seed steps before the first planned step")
    training = lines.index("training: 20 planned env steps, 1 update(s) after every 1")
    assert burst < training < next(i for i, line in enumerate(lines) if line.startswith("eval @ 120: mean return"))
    with open(tmp_path / "run" / "eval.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [120]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == ["step_000000120.pt"]
    assert "horizon: 3" in (tmp_path / "run" / "config.yaml").read_text()
    # plot=true (the default): the learning curve of eval.csv, and its table, next to the run's logs
    curve = tmp_path / "run" / "learning_curve.png"
    assert curve.read_bytes().startswith(b"\x89PNG") and f"learning curve {curve}" in lines[-1]
    assert "| Pendulum-v1 | 1m | 1 |" in curve.with_suffix(".md").read_text()


def test_the_quick_preset_is_the_documented_ten_minute_run():
    cfg = load_config("config", ["preset=quick"])
    assert (cfg.task, cfg.model.name, cfg.model.horizon, cfg.steps, cfg.collector.seed_steps, cfg.eval.freq) == (
        "Pendulum-v1",
        "1m",
        3,
        2000,
        500,
        500,
    )
    assert not cfg.planner.compile and not cfg.optim.compile and cfg.plot and cfg.eval.episodes == 2
    later = load_config("config", ["preset=quick", "steps=3000", "model=5m"])  # settings after it still win
    assert (later.steps, later.model.name) == (3000, "5m")
    assert load_config("config", []).model.name == "8m-h10"  # the main command keeps its networks


def test_env_factory_is_picklable_and_seeds_its_copies():
    factory = EnvFactory("Pendulum-v1", seed=7, num_envs=2)
    again = pickle.loads(pickle.dumps(factory))
    assert again == factory
    first, second = factory(), again()
    try:
        assert first.batch_size == (2,)
        torch.testing.assert_close(first.reset()["observation"], second.reset()["observation"])
    finally:
        first.close()
        second.close()
    worker = WorkerEnv(factory, worker=1)
    assert worker.env_seed == 9  # seed + worker * num_envs: K workers of N envs seed like one process of K*N
    assert pickle.loads(pickle.dumps(worker)).env == factory


def test_compile_notice_comes_before_each_new_graph():
    said: list[str] = []
    on_compile(said.append)
    try:
        fn = EagerOnFailure(lambda x: x + 1, lambda x: x - 1, "the test function")  # stands in for a compiled fn
        fn(torch.zeros(2))
        fn(torch.zeros(2))
        fn(torch.zeros(3))
    finally:
        on_compile(None)
    assert said == ["the test function", "the test function"]  # once per new input shape


def test_deferred_compiling_runs_eagerly_and_compiles_at_the_first_call_after():
    said: list[str] = []
    on_compile(said.append)
    try:
        fn = EagerOnFailure(lambda x: x + 1, lambda x: x - 1, "the test function")
        with compiling_deferred():
            assert fn(torch.zeros(2)).tolist() == [-1, -1]  # eager, no notice, the shape not marked as compiled
            assert fn(torch.zeros(2)).tolist() == [-1, -1]
        assert said == []
        assert fn(torch.zeros(2)).tolist() == [1, 1]  # now it compiles
        with compiling_deferred():
            assert fn(torch.zeros(2)).tolist() == [1, 1]  # an already compiled graph stays in use
    finally:
        on_compile(None)
    assert said == ["the test function"]


def test_building_a_run_compiles_nothing_before_the_seed_steps(tmp_path: Path):
    """The collector calls the planner once while it is built: with planner.compile=true that call runs eagerly."""
    said: list[str] = []
    cfg = load_config(
        "config", [*TINY, "planner.compile=true", "optim.compile=true", "steps=10", "eval.freq=0", "checkpoint_freq=0"]
    )
    run = Run(cfg, tmp_path / "run")
    on_compile(said.append)
    try:
        assert run.build()
    finally:
        on_compile(None)
        run.shutdown()
    assert said == []


@pytest.mark.parametrize(
    "task,flag,padded",
    [
        ("Hopper-v5", None, True),
        ("Pendulum-v1", None, False),
        ("Hopper-v5", "false", False),
        ("Pendulum-v1", "true", True),
    ],
)
def test_episode_end_slices_default_to_on_for_episodic_tasks(tmp_path: Path, task: str, flag: str | None, padded: bool):
    overrides = [*TINY, f"task={task}", "steps=10", "eval.freq=0", "checkpoint_freq=0"]
    run = Run(
        load_config("config", overrides + ([f"buffer.episode_end_slices={flag}"] if flag else [])), tmp_path / "run"
    )
    try:
        run.build()
        assert isinstance(run.buffer.sampler, EpisodeEndSliceSampler) is padded
    finally:
        run.shutdown()


def test_episodic_run_trains_on_slices_padded_past_episode_ends(tmp_path: Path):
    """Hopper under random play ends an episode every ~20 steps: with the default buffer.episode_end_slices (on for
    an episodic task) the updates see padded slices (the mask reaches the losses) and stay finite."""
    cfg = load_config(
        "config", [*TINY, "task=Hopper-v5", "steps=160", "collector.seed_steps=120", "eval.freq=0", "checkpoint_freq=0"]
    )
    train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "train.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("total_loss")]
    assert rows and all(torch.isfinite(torch.tensor(float(r["total_loss"]))) for r in rows)
    assert any(float(r["terminated_frac"]) > 0 for r in rows)
