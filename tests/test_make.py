"""The run's set-up parts (run/make.py): the env factory, the evaluation env, the replay buffer and the logger, each
built from its config group as ``Run.build`` builds them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import TrainConfig
from tdmpc2_trl.data.replay_buffer import add, sample_batch
from tdmpc2_trl.envs.factory import EnvFactory, task_info
from tdmpc2_trl.run.make import (
    EVAL_SEED_OFFSET,
    make_buffer,
    make_env_factory,
    make_eval_env,
    make_logger,
    make_planner,
    make_recorder,
    make_world_model,
)
from tdmpc2_trl.run.resolve import resolve

CPU = torch.device("cpu")
TINY = ["model=1m", "model.latent_dim=16", "model.enc_dim=16", "model.mlp_dim=16", "planner.compile=false"]


def config(*overrides: str) -> TrainConfig:
    """The training recipe's config for Pendulum-v1, its nulls resolved as the trainer resolves them."""
    cfg = load_config("config", ["task=Pendulum-v1", *TINY, *overrides])
    return resolve(cfg, task_info(cfg.task), CPU)


def factory(cfg: TrainConfig) -> EnvFactory:
    info = task_info(cfg.task)
    planner = make_planner(cfg.planner, make_world_model(cfg.model, info, CPU), None, 0.99, horizon=cfg.model.horizon)
    return make_env_factory(cfg, info, planner)


def test_the_env_factory_makes_num_envs_envs_of_the_task_seeded_from_the_run_seed():
    envs = factory(config("num_envs=3", "seed=7"))
    assert (envs.task, envs.seed, envs.num_envs, envs.device) == ("Pendulum-v1", 7, 3, "cpu")
    assert len(envs.transforms) == 1  # the planner's primer: every env carries its state
    assert envs().batch_size == torch.Size([3])


def test_the_eval_env_has_one_env_per_episode_seeded_apart_from_the_training_envs():
    cfg = config("seed=7", "eval.episodes=2")
    envs = factory(cfg)
    env = make_eval_env(envs, cfg.eval)
    same = EnvFactory("Pendulum-v1", seed=7 + EVAL_SEED_OFFSET, num_envs=2)()
    assert EVAL_SEED_OFFSET == 10_000
    assert env.batch_size == torch.Size([2])
    assert torch.equal(env.reset()["observation"], same.reset()["observation"])
    assert not torch.equal(env.reset()["observation"], envs.replace(num_envs=2)().reset()["observation"])
    env.close()
    same.close()


def test_the_recorder_exists_only_for_save_video():
    assert make_recorder(config().eval) is None
    assert make_recorder(config("eval.save_video=true", "eval.video_size=32").eval).size == 32


def test_the_buffer_holds_buffer_size_steps_and_samples_batch_size_slices_of_horizon_transitions(tmp_path: Path):
    cfg = config("steps=1500", "buffer.batch_size=4", "model.horizon=3")
    buffer = make_buffer(cfg.buffer, cfg.model.horizon, tmp_path / "buffer", CPU)
    assert cfg.buffer.size == 1500 and buffer.storage.max_size == 1500  # null: min(1M, steps)
    data = EnvFactory("Pendulum-v1", seed=0)().rollout(20)
    data["collector", "traj_ids"] = torch.zeros(20, dtype=torch.long)
    add(buffer, data)
    assert sample_batch(buffer).batch_size == torch.Size([4, 3])  # 4 slices of 3 transitions


def test_the_logger_writes_the_resolved_config_and_the_csv_tables(tmp_path: Path):
    cfg = config("steps=1500", "logger.backend=csv")
    run_dir = tmp_path / "run"
    logger = make_logger(cfg, run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["buffer"]["size"], saved["collector"]["seed_steps"], saved["loss"]["discount"]) == (1500, 1000, 0.975)
    logger.log_eval(50, -3.5)
    assert (run_dir / "eval.csv").read_text().splitlines() == ["step,episode_reward", "50,-3.5"]


def test_a_run_directory_that_cannot_be_made_is_an_os_error_naming_it(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as err:
        make_logger(config(), tmp_path / "file" / "run")
    assert err.value.filename == str(tmp_path / "file" / "run")


def test_the_set_up_parts_are_public():
    import tdmpc2_trl
    from tdmpc2_trl.run import make

    for name in ("make_env_factory", "make_eval_env", "make_buffer", "make_logger"):
        assert name in tdmpc2_trl.__all__ and getattr(tdmpc2_trl, name) is getattr(make, name)
