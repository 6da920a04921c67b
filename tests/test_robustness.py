"""Nothing lost, clear errors: atomic checkpoints, fallback to the last good one, SIGTERM, mismatched resume."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchrl.collectors import Collector

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError, TrainConfig
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, sample_batch
from tdmpc2_trl.envs.factory import make_env, task_info
from tdmpc2_trl.platform.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    resolve_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from tdmpc2_trl.run.make import make_discount, make_loss, make_updater, make_world_model

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=Pendulum-v1",
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
    "eval.episodes=1",
]


def _state(step: int) -> dict:
    return {"step": step, "world_model": {"w": torch.full((3,), float(step))}}


def test_latest_unreadable_checkpoint_falls_back_to_previous(tmp_path: Path):
    for step in (100, 200):
        save_checkpoint(checkpoint_path(tmp_path, step), _state(step))
    latest = checkpoint_path(tmp_path, 200)
    latest.write_bytes(latest.read_bytes()[:50])  # truncated by a crash or a full disk
    path, state = resolve_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 100) and state["step"] == 100
    checkpoint_path(tmp_path, 100).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="unreadable"):
        resolve_checkpoint(latest)
    with pytest.raises(ConfigError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path / "missing")


def test_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch):
    save_checkpoint(checkpoint_path(tmp_path, 100), _state(100))

    def dies_half_way(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        save_checkpoint(checkpoint_path(tmp_path, 200), _state(200))
    assert list_checkpoints(tmp_path / "checkpoints") == [checkpoint_path(tmp_path, 100)]
    assert resolve_checkpoint(tmp_path)[1]["step"] == 100


def test_keeps_only_the_newest_checkpoints(tmp_path: Path):
    for step in (1, 2, 3):
        save_checkpoint(checkpoint_path(tmp_path, step), _state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000000002.pt", "step_000000003.pt"]


def _train(*overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "recipes" / "train.py"), *TINY, *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A long run stopped with SIGTERM once its first episode is logged (still in the random seed steps)."""
    run_dir = tmp_path_factory.mktemp("sigterm") / "run"
    proc = _train(f"hydra.run.dir={run_dir}", "steps=1000000", "collector.seed_steps=100000", "checkpoint_freq=0")
    deadline = time.time() + 300
    while not (run_dir / "train.csv").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never logged an episode"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return run_dir, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(interrupted_run):
    run_dir, proc = interrupted_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "interrupted at step" in proc.stdout and "Traceback" not in proc.stderr
    path, state = resolve_checkpoint(run_dir)
    assert state["step"] >= 200 and len(state["replay_buffer"]) > 0


@pytest.mark.slow
def test_resume_with_another_model_is_a_one_line_error(interrupted_run):
    run_dir, _ = interrupted_run
    proc = _train(f"resume={run_dir}", "model.mlp_dim=64", "steps=1000000")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in err and "model.mlp_dim=32 (config: 64)" in err
    assert len(err.strip().splitlines()) == 1


def _recipe_config(**overrides) -> TrainConfig:
    """configs/config.yaml with the 1m preset at tiny sizes."""
    return load_config(
        "config",
        [
            "model=1m",
            "model.latent_dim=16",
            "model.enc_dim=32",
            "model.mlp_dim=32",
            "model.num_q=2",
            "buffer.batch_size=8",
            "precision=fp32",
            *[f"{k}={v}" for k, v in overrides.items()],
        ],
    )


def _training_objects(c: TrainConfig, info, seed: int):
    torch.manual_seed(seed)
    world_model = make_world_model(c.model, info, torch.device("cpu"))
    loss = make_loss(c.loss, world_model, make_discount(c.loss, info))
    updater = make_updater(c.optim, loss, c.loss.tau)
    buffer = make_replay_buffer(capacity=300, batch_size=c.buffer.batch_size, horizon=c.model.horizon)
    return dict(world_model=world_model, loss=loss, updater=updater, buffer=buffer)


def _updates(objs: dict, n: int) -> None:
    for _ in range(n):
        objs["updater"](sample_batch(objs["buffer"]))


def test_resume_restores_every_piece_of_training_state_bit_identically(tmp_path: Path):
    """Updates after a checkpoint round trip equal updates without one: networks, target Q, RunningScale, both
    Adam states, the buffer and the RNG streams (the next sampled batches) all come back exactly."""
    c, info = _recipe_config(), task_info("Pendulum-v1")
    straight = _training_objects(c, info, seed=0)
    env = make_env("Pendulum-v1", seed=0)
    collector = Collector(env, None, frames_per_batch=1, total_frames=250)
    for data in collector:
        add(straight["buffer"], data)
    collector.shutdown()
    _updates(straight, 5)
    path = save_checkpoint(
        checkpoint_path(tmp_path, 250),
        training_state(step=250, burst_done=True, config=dataclasses.asdict(c), task=info.__dict__, **straight),
    )
    _updates(straight, 5)  # the uninterrupted run goes on

    resumed = _training_objects(c, info, seed=123)  # different init and RNG: everything must come from the file
    step, burst_done = restore_training_state(resolve_checkpoint(path)[1], **resumed)
    assert (step, burst_done) == (250, True)
    _updates(resumed, 5)

    for name in ("world_model", "loss"):
        a, b = straight[name].state_dict(), resumed[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for optim in ("wm_optim", "pi_optim"):
        a, b = (getattr(o["updater"], optim).state_dict()["state"] for o in (straight, resumed))
        assert all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i]), optim
    assert len(resumed["buffer"]) == 250


@pytest.mark.slow
def test_non_finite_observation_is_reported_with_its_step(tmp_path: Path):
    """An env that returns NaN once: the run says at which step, skips the poisoned updates and finishes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "train.py"),
            *TINY,
            "task=nan_pendulum:NaNPendulum-v0",
            f"hydra.run.dir={tmp_path / 'run'}",
            "steps=260",
            "collector.seed_steps=200",
            "eval.freq=0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "non-finite observation at step 150" in proc.stdout + proc.stderr
    assert resolve_checkpoint(tmp_path / "run")[1]["step"] == 260
