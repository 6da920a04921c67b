"""The task selector: DMControl and gymnasium tasks as TorchRL envs with actions in [-1, 1]."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Unbounded
from torchrl.envs import TensorDictPrimer

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.factory import KNOWN_DMC_TASKS, TaskInfo, make_env, task_info


def test_task_info_values():
    assert task_info("Pendulum-v1") == TaskInfo("Pendulum-v1", "gym", 200, False, 3, 1, 1)
    assert task_info("cartpole-swingup") == TaskInfo("cartpole-swingup", "dmc", 500, False, 5, 1, 2)
    hopper = task_info("Hopper-v5")
    assert hopper.episodic and hopper.episode_length == 1000 and (hopper.obs_dim, hopper.action_dim) == (11, 3)
    assert not task_info("HalfCheetah-v5").episodic
    cup = task_info("cup-catch")  # TD-MPC2's alias of ball_in_cup-catch
    assert cup.family == "dmc" and (cup.obs_dim, cup.action_dim) == (8, 2)
    assert {"cartpole-swingup", "walker-walk", "ball_in_cup-catch"} <= set(KNOWN_DMC_TASKS)


def test_pendulum_agent_actions_are_rescaled_to_the_env_bounds():
    env = make_env("Pendulum-v1", seed=0)
    assert torch.equal(env.action_spec.space.low, torch.tensor([-1.0]))
    assert torch.equal(env.action_spec.space.high, torch.tensor([1.0]))
    td = env.reset()
    for agent, torque in [(1.0, 2.0), (-0.5, -1.0)]:  # Pendulum's torque range is [-2, 2]
        td["action"] = torch.tensor([agent])
        assert env.transform.inv(td.clone())["action"].item() == pytest.approx(torque)
    # the physics receives the rescaled action: same trajectory as gymnasium itself with torque 2.0
    raw = gym.make("Pendulum-v1")
    raw.reset(seed=0)
    cos, sin, speed = td["observation"].tolist()
    raw.unwrapped.state = np.array([math.atan2(sin, cos), speed])  # start gymnasium where the env stands
    td["action"] = torch.tensor([1.0])
    out = env.step(td)
    raw_obs, raw_reward, *_ = raw.step([2.0])
    torch.testing.assert_close(out["next", "observation"], torch.as_tensor(raw_obs))
    assert out["next", "reward"].item() == pytest.approx(float(raw_reward), rel=1e-5)
    assert out["action"].item() == 1.0  # the agent's action is what gets recorded
    env.close()
    raw.close()


def test_dmc_rollout_keys_and_time_limit_is_truncation():
    env = make_env("cartpole-swingup", seed=0)
    rollout = env.rollout(510, break_when_any_done=False)
    for key in [
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "truncated"),
        ("next", "done"),
        "is_init",
        "step_count",
        ("next", "episode_reward"),
    ]:
        assert key in rollout.keys(True)
    assert rollout["observation"].shape == (510, 5) and rollout["observation"].dtype == torch.float32
    done = rollout["next", "done"].squeeze(-1).nonzero().squeeze(-1).tolist()
    assert done == [499]  # 1000 physics steps with action repeat 2
    assert not rollout["next", "terminated"].any()  # a time limit, never a termination: always bootstrap
    assert rollout["is_init"].squeeze(-1).nonzero().squeeze(-1).tolist() == [0, 500]
    assert rollout["step_count"][[0, 499, 500]].squeeze(-1).tolist() == [0, 499, 0]
    torch.testing.assert_close(rollout["next", "episode_reward"][499], rollout["next", "reward"][:500].sum(0))
    env.close()


def test_dmc_action_repeat_sums_the_rewards_of_two_physics_steps():
    from torchrl.envs import DMControlEnv

    env = make_env("cartpole-swingup", seed=3)
    raw = DMControlEnv("cartpole", "swingup")
    raw.set_seed(3)
    td, raw_td = env.reset(), raw.reset()
    torch.testing.assert_close(td["observation"], torch.cat([raw_td["position"], raw_td["velocity"]]).float())
    td["action"] = torch.tensor([0.7])
    raw_td["action"] = torch.tensor([0.7], dtype=torch.float64)
    out = env.step(td)
    reward = 0.0
    for _ in range(2):
        raw_td = raw.step(raw_td)["next"]
        reward += raw_td["reward"].item()
        raw_td["action"] = torch.tensor([0.7], dtype=torch.float64)
    assert out["next", "reward"].item() == pytest.approx(reward, rel=1e-5)
    torch.testing.assert_close(out["next", "observation"], torch.cat([raw_td["position"], raw_td["velocity"]]).float())
    env.close()
    raw.close()


def test_num_envs_2_seeds_copies_and_resets_each_env_on_its_own():
    env = make_env("Pendulum-v1", seed=5, num_envs=2)
    assert env.batch_size == (2,) and env.action_spec.shape == (2, 1)
    rollout = env.rollout(205, break_when_any_done=False)  # Pendulum episodes are 200 steps
    assert rollout.shape == (2, 205) and rollout["observation"].shape == (2, 205, 3)
    steps = rollout["step_count"].squeeze(-1)
    assert steps[:, :3].tolist() == [[0, 1, 2]] * 2 and steps[:, 200].tolist() == [0, 0]
    assert rollout["is_init"].squeeze(-1).sum(-1).tolist() == [2, 2]
    assert rollout["next", "truncated"].squeeze(-1).nonzero()[:, 1].tolist() == [199, 199]
    env.close()
    # copy i is seeded with seed + i
    single = make_env("Pendulum-v1", seed=6)
    torch.testing.assert_close(rollout["observation"][1, 0], single.reset()["observation"])
    assert not torch.equal(rollout["observation"][0, 0], rollout["observation"][1, 0])
    single.close()


def test_extra_transforms_are_appended():
    primer = TensorDictPrimer({"warm": Unbounded(shape=(3, 1))}, default_value=0.0, expand_specs=True)
    env = make_env("Pendulum-v1", seed=0, num_envs=2, transforms=[primer])
    td = env.reset()
    assert td["warm"].shape == (2, 3, 1)
    td = env.rand_step(td)
    assert isinstance(td, TensorDict) and "warm" in td.keys()
    env.close()


@pytest.mark.parametrize(
    "task,needle",
    [("NoSuchEnv-v0", "unknown task"), ("cartpole-nope", "unknown task"), ("CartPole-v1", "discrete actions")],
)
def test_bad_tasks_raise_a_one_line_config_error(task, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        make_env(task)
    message = str(err.value)
    assert "\n" not in message
    if needle == "unknown task":
        assert "cartpole-swingup" in message and "gymnasium id" in message
    else:
        assert "continuous" in message


def test_module_that_cannot_be_imported_is_named_with_its_error():
    with pytest.raises(ConfigError) as err:
        task_info("no_such_module_xyz:MyEnv-v0")
    assert str(err.value) == (
        "task 'no_such_module_xyz:MyEnv-v0': cannot import module 'no_such_module_xyz' "
        "(ModuleNotFoundError: No module named 'no_such_module_xyz'); put its folder on "
        "PYTHONPATH"
    )


def test_error_inside_a_task_module_is_named_without_the_path_hint(tmp_path, monkeypatch):
    (tmp_path / "broken_env_mod.py").write_text("import gymnasium\nimport not_installed_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        make_env("broken_env_mod:Broken-v0")
    assert str(err.value) == (
        "task 'broken_env_mod:Broken-v0': cannot import module 'broken_env_mod' "
        "(ModuleNotFoundError: No module named 'not_installed_dep')"
    )
    (tmp_path / "syntax_env_mod.py").write_text("def f(:\n")
    with pytest.raises(
        ConfigError,
        match=r"^task 'syntax_env_mod:X-v0': cannot import module 'syntax_env_mod' "
        r"\(SyntaxError: ",
    ) as err:
        task_info("syntax_env_mod:X-v0")
    assert "\n" not in str(err.value)


def test_num_envs_must_be_positive():
    with pytest.raises(ConfigError, match="num_envs"):
        make_env("Pendulum-v1", num_envs=0)
