"""Every mistyped or out-of-range setting is one line on stderr naming the key and the allowed values, exit code 2,
no traceback, before anything slow (the typed configs of tdmpc2_trl/config/schema.py, composed by
tdmpc2_trl/config/compose.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tdmpc2_trl.config.compose import command_line_error, load_config
from tdmpc2_trl.config.schema import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]

BAD = [  # (override, what the one line must say)
    ("logger.wandb=false", "unknown key logger.wandb: it is now logger.backend"),
    ("model.latent_dim=abc", "model.latent_dim=abc: must be an integer >= 1"),
    ("planner.num_elites=1000", "planner.num_elites=1000 must be at most planner.num_samples=512"),
    ("planner.num_pi_trajs=512", "planner.num_pi_trajs=512 must be below planner.num_samples=512"),
    ("planner.min_std=3", "planner.min_std=3.0 must be below planner.max_std=2.0"),
    ("stepz=10", "unknown key stepz (did you mean steps?)"),
    ("+foo=1", "unknown key foo; keys: task"),
    ("model.nope=1", "unknown key model.nope"),
    ("horizon=5", "unknown key horizon: it is now model.horizon"),
    ("eval_freq=100", "unknown key eval_freq: it is now eval.freq"),
    ("model=huge", "model=huge: unknown model preset; available: 19m, 1m, 317m, 48m, 5m, 8m-h10"),
    ("preset=quik", "preset=quik: unknown preset; available: quick"),
    ("planner=3", "planner=3: planner is a group of keys"),
    ("steps=0", "steps=0: must be an integer >= 1"),
    ("steps=abc", "steps=abc: must be an integer >= 1"),
    ("steps=1.5", "steps=1.5: must be an integer >= 1"),
    ("steps=[1", "cannot read the command line"),
    ("seed=-1", "seed=-1: must be an integer >= 0"),
    ("init_from=no-such-official-1m.pt", "init_from=no-such-official-1m.pt: no such file or directory"),
    ("threads=0", "threads=0: must be an integer >= 1 or null"),
    ("device=tpu", "device='tpu': must be auto, cpu, cuda, cuda:N or mps"),
    ("obs=depth", "obs='depth': must be one of state, rgb"),
    ("precision=fp16", "precision='fp16': must be one of auto, fp32, bf16"),
    ("model.horizon=0", "model.horizon=0: must be an integer >= 1"),
    ("model.latent_dim=100", "model.latent_dim=100 must be a multiple of model.simnorm_dim=8"),
    ("model.encoder_final=relu", "model.encoder_final='relu': must be one of simnorm, ln_simnorm"),
    ("planner.mpc=maybe", "planner.mpc=maybe: must be true or false"),
    ("optim.lr=-1", "optim.lr=-1.0: must be a number > 0.0"),
    ("optim.utd_ratio=0", "optim.utd_ratio=0.0: must be a number > 0.0"),
    ("loss.discount=1.5", "loss.discount=1.5: must be a number > 0.0 and <= 1.0 or null"),
    ("buffer.storage=disk", "buffer.storage='disk': must be one of memory, memmap"),
    ("collector.workers=0", "collector.workers=0: must be an integer >= 1"),
    ("collector.seed_steps=0", "collector.seed_steps=0: the first update needs a slice of model.horizon=10 stored"),
    ("collector.backend=mpi", "collector.backend='mpi': must be one of local, ray"),
    ("logger.wandb_mode=sometimes", "logger.wandb_mode='sometimes': must be one of offline, online"),
    ("eval.episodes=0", "eval.episodes=0: must be an integer >= 1"),
]


@pytest.fixture
def train_main(load_recipe, restore_signal_handlers):
    """recipes/train.py's ``main`` in this process (it installs signal handlers: pytest's come back after)."""
    return load_recipe("train").main


@pytest.mark.parametrize("override,says", BAD, ids=[o for o, _ in BAD])
def test_bad_override_is_one_line_and_exit_2(train_main, capsys, tmp_path: Path, override: str, says: str):
    rc = train_main([f"hydra.run.dir={tmp_path / 'run'}", override])
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in out + err, err
    assert says in err, err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_unwritable_run_dir_is_one_line(train_main, capsys, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert train_main([f"hydra.run.dir={blocker / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write the run directory {blocker / 'run'}" in err


@pytest.mark.parametrize(
    "script,override,says",
    [
        ("train.py", "model.latent_dim=abc", "error: model.latent_dim=abc: must be an integer >= 1"),
        ("train.py", "planner.num_elites=1000", "error: planner.num_elites=1000 must be at most"),
        ("eval.py", "checkpoint=runs/x episodes=0", "error: episodes=0: must be an integer >= 1"),
        ("eval.py", "seed=1", "error: checkpoint is required"),
    ],
)
def test_bad_override_in_a_real_process(tmp_path: Path, script: str, override: str, says: str):
    """The real command line: one line on stderr, exit 2, no traceback (and fast: no torch import first)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    args = override.split() + ([f"hydra.run.dir={tmp_path / 'run'}"] if script == "train.py" else [])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(says), proc.stderr
    assert proc.stdout == ""


def test_each_default_lives_in_the_dataclasses():
    """configs/config.yaml only picks the model preset; the composed defaults are TrainConfig's own."""
    assert set(OmegaConf.load(ROOT / "configs" / "config.yaml")) == {"defaults", "hydra"}
    composed = load_config("config", ["model=8m-h10"])
    assert composed == TrainConfig()
    with pytest.raises(ConfigError, match="model=seed: unknown model preset; available: .*8m-h10"):
        load_config("config", ["model=seed"])  # the 8m-h10 networks' old name: "seed" is the random seed only


def test_horizon_has_one_home():
    assert "horizon" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert load_config("config", ["model=1m"]).model.horizon == 3
    assert load_config("config", ["model=1m", "model.horizon=5"]).model.horizon == 5


def test_hydra_flags_are_left_to_hydra():
    """``--cfg job``, ``--help``, ``--multirun`` sweeps: not checked as a single config (Hydra handles them)."""
    assert command_line_error("config", ["--cfg", "job", "model=1m"]) is None
    assert command_line_error("config", ["--multirun", "seed=1,2"]) is None
    assert command_line_error("config", ["seed=1,2"]) is not None  # a sweep without --multirun is a mistake
