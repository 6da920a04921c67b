"""run/resolve.py: each null's rule against a hand computation, ``resolve`` once and idempotent, and the
constructor defaults that restate the config pinned equal to it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError, LossConfig, ModelConfig, OptimConfig, PlannerConfig, check
from tdmpc2_trl.envs.factory import TaskInfo
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.run import resolve

CPU = torch.device("cpu")


def task(episode_length: int = 200, episodic: bool = False, action_dim: int = 1) -> TaskInfo:
    return TaskInfo("made-up", "gym", episode_length, episodic, obs_dim=3, action_dim=action_dim)


def test_seed_steps_are_max_of_1000_and_five_episodes():
    assert [resolve.seed_steps(None, n) for n in (1, 200, 201, 1000)] == [1000, 1000, 1005, 5000]
    assert resolve.seed_steps(7, 1000) == 7


def test_buffer_holds_every_step_up_to_a_million():
    assert [resolve.buffer_size(None, s) for s in (1200, 1_000_000, 3_000_000)] == [1200, 1_000_000, 1_000_000]
    assert resolve.buffer_size(500, 3_000_000) == 500


def test_discount_follows_the_episode_length():
    # TD-MPC2: clip((L/5 - 1) / (L/5), 0.95, 0.995); L=200: 39/40; L=1000: 0.995; L=20: 0.95
    assert resolve.discount(None, 200) == pytest.approx(39 / 40)
    assert resolve.discount(None, 1000) == pytest.approx(0.995)
    assert resolve.discount(None, 20) == pytest.approx(0.95)
    assert resolve.discount(0.9, 1000) == 0.9


def test_encoder_lr_scale_is_0_3_for_official_presets_only():
    assert [resolve.enc_lr_scale(None, p) for p in ("1m", "317m", "8m-h10")] == [0.3, 0.3, 1.0]
    assert resolve.enc_lr_scale(0.5, "1m") == 0.5


def test_two_extra_iterations_for_official_presets_from_20_action_dims():
    assert [resolve.extra_iterations(None, "5m", a) for a in (19, 20)] == [0, 2]
    assert resolve.extra_iterations(None, "8m-h10", 38) == 0
    assert resolve.extra_iterations(1, "5m", 38) == 1


def test_episode_end_slices_follow_whether_the_task_terminates():
    assert [resolve.episode_end_slices(None, e) for e in (True, False)] == [True, False]
    assert resolve.episode_end_slices(False, True) is False


def test_precision_and_threads_become_concrete():
    assert resolve.precision("fp32", CPU) == "fp32" and resolve.precision("bf16", CPU) == "bf16"
    assert resolve.precision("auto", CPU) in ("fp32", "bf16")
    assert resolve.threads(None) == torch.get_num_threads() and resolve.threads(3) == 3


def test_resolve_fills_every_null_once_and_keeps_set_values():
    cfg = load_config("config", ["model=1m", "steps=1200", "loss.discount=0.9", "threads=1"])
    out = resolve.resolve(cfg, task(episode_length=300, episodic=True, action_dim=21), CPU)
    assert (out.collector.seed_steps, out.buffer.size, out.buffer.episode_end_slices) == (1500, 1200, True)
    assert (out.loss.discount, out.optim.enc_lr_scale, out.planner.extra_iterations) == (0.9, 0.3, 2)
    assert out.threads == 1 and out.precision in ("fp32", "bf16")
    assert resolve.resolve(out, task(episode_length=10), CPU) == out  # idempotent: nothing null is left
    assert cfg.buffer.size is None  # a copy: the command line's config is unchanged
    check(out)  # still in range


def test_a_multitask_config_keeps_its_per_task_discount():
    cfg = load_config("config", ["tasks=[Pendulum-v1,cartpole-swingup]"])
    assert resolve.resolve(cfg, task(), CPU, multitask=True).loss.discount is None


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize(
    "constructor,group,names",
    [
        (
            TDMPC2Planner.__init__,
            PlannerConfig(),
            {
                "num_samples": "num_samples",
                "num_pi_trajs": "num_pi_trajs",
                "num_elites": "num_elites",
                "iterations": "iterations",
                "temperature": "temperature",
                "min_std": "min_std",
                "max_std": "max_std",
                "mpc": "mpc",
                "compile_scope": "compile_scope",
            },
        ),
        (TDMPC2Planner.__init__, ModelConfig(), {"horizon": "horizon"}),
        (
            TDMPC2Loss.__init__,
            LossConfig(),
            {
                "rho": "rho",
                "consistency_coef": "consistency_coef",
                "reward_coef": "reward_coef",
                "value_coef": "value_coef",
                "termination_coef": "termination_coef",
                "entropy_coef": "entropy_coef",
                "scale_tau": "tau",
            },
        ),
        (TDMPC2Update.__init__, OptimConfig(), {"grad_clip_norm": "grad_clip_norm"}),
        (TDMPC2Update.__init__, LossConfig(), {"tau": "tau"}),
        (make_optimizers, OptimConfig(), {"lr": "lr"}),
    ],
)
def test_constructor_defaults_equal_the_config_defaults(constructor, group, names: dict[str, str]):
    defaults = _defaults(constructor)
    assert {arg: defaults[arg] for arg in names} == {arg: getattr(group, key) for arg, key in names.items()}


@pytest.mark.parametrize("overrides", [{"num_pi_trajs": 512}, {"num_elites": 513}])
def test_planner_ranges_are_checked_by_the_config_and_the_constructor(overrides: dict):
    with pytest.raises(ConfigError, match=f"planner.{next(iter(overrides))}="):
        check(dataclasses.replace(PlannerConfig(), **overrides), "planner.")
    from tdmpc2_trl.networks.world_model import WorldModel

    model = WorldModel(ModelConfig(latent_dim=16, enc_dim=16, mlp_dim=16, simnorm_dim=8), (3,), 1)
    with pytest.raises(ValueError, match="num_pi_trajs"):
        TDMPC2Planner(model, discount=0.99, **overrides)
