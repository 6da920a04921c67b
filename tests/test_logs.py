"""Run logs: the CSV tables always, one TorchRL logger on top (logger.backend), a missing extra in one line."""

from __future__ import annotations

import importlib.util

import pytest

from tdmpc2_trl.config.schema import ConfigError, LoggerConfig
from tdmpc2_trl.run.logs import RunLogger


def test_csv_backend_writes_the_two_tables_and_nothing_else(tmp_path):
    log = RunLogger(tmp_path, {}, LoggerConfig(backend="csv"))
    log.log_eval(500, -1200.0)
    log.log_train(600, {"episode_reward": -900.25, "loss": 0.5})
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.csv", "train.csv"]
    assert (tmp_path / "eval.csv").read_text().splitlines() == ["step,episode_reward", "500,-1200"]
    assert (tmp_path / "train.csv").read_text().splitlines() == ["step,episode_reward,loss", "600,-900.25,0.5"]


def test_wandb_backend_logs_offline_through_torchrl(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = RunLogger(tmp_path, {"task": "Pendulum-v1"}, LoggerConfig(backend="wandb", wandb_mode="offline"))
    assert type(log.backend).__name__ == "WandbLogger"
    log.log_eval(500, -1200.0)
    log.close()
    assert (tmp_path / "eval.csv").read_text().splitlines()[1] == "500,-1200"
    assert list(tmp_path.rglob("offline-run-*")), "wandb wrote no offline run under the run directory"


@pytest.mark.parametrize("backend,package", [("wandb", "wandb"), ("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_backend_without_its_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, backend, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ConfigError) as err:
        RunLogger(tmp_path, {}, LoggerConfig(backend=backend))
    assert str(err.value) == f'logger.backend={backend} needs the {package} package: pip install -e ".[{package}]"'
