"""Official TD-MPC2 training defaults of the official presets: encoder lr scale 0.3 and +2 MPPI iterations when the
action has >= 20 dimensions; the default 8m-h10 preset keeps one learning rate and the configured iterations."""

from __future__ import annotations

import pytest
import torch

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.envs.factory import TaskInfo
from tdmpc2_trl.run.make import make_loss, make_planner, make_updater, make_world_model

OFFICIAL = ["1m", "5m", "19m", "48m", "317m"]
TINY = ["model.latent_dim=16", "model.enc_dim=16", "model.mlp_dim=16", "planner.compile=false", "optim.compile=false"]


def recipe_config(*overrides: str) -> TrainConfig:
    """The training recipe's config (configs/config.yaml) as train.py composes it."""
    return load_config("config", [*TINY, *overrides])


def task(action_dim: int) -> TaskInfo:
    return TaskInfo("made-up", "gym", 100, False, obs_dim=5, action_dim=action_dim)


def encoder_lr(c: TrainConfig) -> float:
    loss = make_loss(c.loss, make_world_model(c.model, task(2), torch.device("cpu")), 0.99)
    groups = {g["name"]: g["lr"] for g in make_updater(c.optim, loss, c.loss.tau).wm_optim.param_groups}
    assert groups["dynamics_reward_termination_q"] == pytest.approx(c.optim.lr)
    return groups["encoder"]


def iterations(c: TrainConfig, action_dim: int) -> int:
    return make_planner(
        c.planner, make_world_model(c.model, task(action_dim), torch.device("cpu")), None, 0.99, horizon=c.model.horizon
    ).iterations


@pytest.mark.parametrize("preset", OFFICIAL)
def test_official_presets_scale_the_encoder_lr_by_0_3(preset: str):
    assert encoder_lr(recipe_config(f"model={preset}")) == pytest.approx(3e-4 * 0.3)


def test_seed_preset_keeps_one_learning_rate():
    assert encoder_lr(recipe_config()) == pytest.approx(3e-4)


@pytest.mark.parametrize("preset,scale", [("5m", 1.0), ("8m-h10", 0.3)])
def test_enc_lr_scale_override_wins(preset: str, scale: float):
    assert encoder_lr(
        recipe_config(f"model={preset}", f"optim.enc_lr_scale={scale}", "optim.lr=1e-3")
    ) == pytest.approx(1e-3 * scale)


@pytest.mark.parametrize("preset", OFFICIAL)
def test_official_presets_add_two_iterations_from_20_action_dims(preset: str):
    c = recipe_config(f"model={preset}")
    assert [iterations(c, a) for a in (1, 19, 20, 38)] == [6, 6, 8, 8]


def test_extra_iterations_add_to_the_configured_ones():
    assert iterations(recipe_config("model=1m", "planner.iterations=3"), 21) == 5


def test_seed_preset_keeps_the_configured_iterations():
    c = recipe_config()
    assert [iterations(c, a) for a in (4, 20, 38)] == [6, 6, 6]
