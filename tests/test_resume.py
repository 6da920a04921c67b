"""The resume contract (run/contract.py), extending a run to more steps, and the loud checkpoint fallback."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from test_faults import TINY  # the fault tests' tiny run (tests/ is on sys.path: pytest's rootdir-relative import)

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.factory import TaskInfo
from tdmpc2_trl.platform.checkpoint import checkpoint_path, list_checkpoints, resolve_checkpoint, save_checkpoint
from tdmpc2_trl.run.contract import MAY_CHANGE, may_change, resumed_config, run_values
from tdmpc2_trl.run.resolve import resolve
from tdmpc2_trl.run.trainer import train

RUN = ["collector.seed_steps=30", "eval.freq=20", "checkpoint_freq=20"]
PENDULUM = TaskInfo("Pendulum-v1", "gym", 200, False, obs_dim=3, action_dim=1)


def run_config(*overrides: str):
    """A run's saved config: the command line's, resolved as the trainer resolves it."""
    return dataclasses.asdict(resolve(load_config("config", ["model=1m", *overrides]), PENDULUM, torch.device("cpu")))


def test_a_resume_takes_the_runs_resolved_values_and_the_commands_allowed_ones():
    saved = run_config("steps=1200", "eval.freq=400")
    cfg = resumed_config(load_config("config", ["model=1m", "steps=1600", "eval.freq=100", "threads=1"]), saved, "R")
    assert (cfg.steps, cfg.eval.freq, cfg.threads) == (1600, 100, 1)  # may change
    assert (cfg.buffer.size, cfg.collector.seed_steps, cfg.loss.discount) == (1200, 1000, 0.975)  # from the run
    assert (cfg.optim.enc_lr_scale, cfg.planner.extra_iterations, cfg.buffer.episode_end_slices) == (0.3, 0, False)


def test_a_changed_setting_is_refused_naming_the_key_and_both_values():
    saved = run_config("steps=1200", "seed=1")
    with pytest.raises(ConfigError) as err:
        resumed_config(load_config("config", ["model=1m", "seed=2", "buffer.size=5000"]), saved, "runs/r")
    allowed = (
        "steps, eval.*, checkpoint_freq, logger.*, threads, progress, device, precision, planner.compile, "
        "optim.compile, collector.ray_address"
    )
    assert str(err.value) == (
        "cannot resume runs/r, whose settings differ from the config: seed=1 (config: 2), "
        f"buffer.size=1200 (config: 5000); a resume may change only {allowed} (start a new "
        "run for the others)"
    )


def test_a_changed_model_names_four_keys_and_counts_the_rest():
    with pytest.raises(ConfigError, match=r"config: model.name=1m \(config: 8m-h10\), .* and \d+ more; a resume may"):
        resumed_config(load_config("config", ["model=8m-h10"]), run_config("steps=1200"), "R")


def test_the_contract_keys():
    assert [
        may_change(k)
        for k in (
            "steps",
            "eval.freq",
            "logger.backend",
            "planner.compile",
            "planner.iterations",
            "buffer.size",
            "seed",
            "num_envs",
            "collector.workers",
            "tasks",
        )
    ] == [True, True, True, True, False, False, False, False, False, False]
    assert "resume" in MAY_CHANGE


def test_a_run_saved_before_resolution_keeps_the_capacity_of_its_own_steps():
    assert run_values({"steps": 1200, "buffer": {"size": None}})["buffer.size"] == 1200
    assert run_values({"steps": 5, "model": {"termination": "official"}})["model.termination"] == "latent"


def _fake_checkpoint(path: Path, step: int) -> None:
    save_checkpoint(path, {"world_model": {}, "step": step}, keep=0)


def test_an_unreadable_newest_checkpoint_is_skipped_in_one_line(tmp_path: Path, capsys):
    for step in (400, 800):
        _fake_checkpoint(checkpoint_path(tmp_path, step), step)
    newest = checkpoint_path(tmp_path, 800)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    path, state = resolve_checkpoint(tmp_path)
    assert (path, state["step"]) == (checkpoint_path(tmp_path, 400), 400)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"warning: checkpoint {newest} is unreadable (")
    assert err[0].endswith("); skipped, trying the one before it")


def _steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_a_stopped_run_extended_to_more_steps(tmp_path: Path, capsys):
    """Made with steps=60 (buffer: 60), its newest checkpoint cut short so the resume starts at step 40 with the
    buffer not full, then extended to 90: the buffer keeps its capacity (the ring wraps at 60, where the old resume
    failed with an IndexError), evaluations and checkpoints go on, each row is logged once."""
    run_dir = tmp_path / "run"
    train(load_config("config", [*TINY, *RUN, "steps=60"]), run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["buffer"]["size"], saved["collector"]["seed_steps"], saved["loss"]["discount"]) == (60, 30, 0.95)
    assert (saved["optim"]["enc_lr_scale"], saved["threads"], saved["precision"]) == (0.3, 1, "fp32")
    newest = checkpoint_path(run_dir, 60)
    newest.write_bytes(newest.read_bytes()[:1000])
    capsys.readouterr()

    train(load_config("config", [*TINY, *RUN, "steps=90", f"resume={run_dir}"]), run_dir)
    out = capsys.readouterr()
    assert f"warning: checkpoint {newest} is unreadable" in out.err
    assert f"resumed from {checkpoint_path(run_dir, 40)} at step 40" in out.out
    assert _steps(run_dir / "eval.csv") == [20, 40, 60, 80, 90]
    # 20-step episodes; the resumed run starts a fresh one at step 40 (the row of step 60 before it was dropped)
    assert _steps(run_dir / "train.csv") == [20, 40, 60, 80]
    assert list_checkpoints(run_dir / "checkpoints") == [checkpoint_path(run_dir, s) for s in (80, 90)]
    state = torch.load(checkpoint_path(run_dir, 90), weights_only=True)
    assert (state["config"]["steps"], state["config"]["buffer"]["size"]) == (90, 60)
    storage = state["replay_buffer"]["_storage"]["_storage"]
    assert storage["step_count"].shape[:2] == (60, 1)  # the capacity kept, full after the wrap
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["steps"] == 90

    train(load_config("config", [*TINY, *RUN, "steps=80", f"resume={run_dir}"]), run_dir)
    assert "nothing to do: the run is already at step 90 >= steps=80" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"differ from the config: seed=1 \(config: 2\);"):
        train(load_config("config", [*TINY, *RUN, "steps=120", "seed=2", f"resume={run_dir}"]), run_dir)
    assert _steps(run_dir / "eval.csv") == [20, 40, 60, 80, 90]
