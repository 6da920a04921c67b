"""The task selector: DMControl and gymnasium tasks as TorchRL envs with actions in [-1, 1]."""
import pytest
import torch

from tdmpc2_trl.config import ConfigError
from tdmpc2_trl.envs import TaskInfo, make_env, task_info


def test_task_info_values():
    assert task_info("Pendulum-v1") == TaskInfo("Pendulum-v1", "gym", 200, False, 3, 1, 1)
    assert task_info("cartpole-swingup") == TaskInfo("cartpole-swingup", "dmc", 500, False, 5, 1, 2)
    hopper = task_info("Hopper-v5")
    assert hopper.episodic and hopper.episode_length == 1000 and hopper.action_dim == 3
    assert task_info("cup-catch").name == "cup-catch"  # TD-MPC2's alias of ball_in_cup-catch


def test_pendulum_actions_are_rescaled_to_env_bounds():
    env = make_env("Pendulum-v1", seed=0)
    assert torch.equal(env.action_spec.space.low, torch.tensor([-1.0]))
    assert torch.equal(env.action_spec.space.high, torch.tensor([1.0]))
    td = env.reset()
    td["action"] = torch.tensor([1.0])
    # the inverse transforms (agent -> env) map 1.0 to Pendulum's max torque 2.0 and -0.5 to -1.0
    assert env.transform.inv(td.clone())["action"].item() == pytest.approx(2.0)
    td["action"] = torch.tensor([-0.5])
    assert env.transform.inv(td.clone())["action"].item() == pytest.approx(-1.0)
    env.close()


def test_rollout_keys_and_episode_end_is_truncation():
    env = make_env("cartpole-swingup", seed=0)
    rollout = env.rollout(510, break_when_any_done=False)
    for key in [("next", "reward"), ("next", "terminated"), ("next", "truncated"), "is_init", "step_count",
                ("next", "episode_reward")]:
        assert key in rollout.keys(True)
    done = rollout["next", "done"].squeeze(-1).nonzero().squeeze(-1).tolist()
    assert done == [499]  # 1000 physics steps with action repeat 2
    assert not rollout["next", "terminated"].any()  # a time limit, never a termination: always bootstrap
    assert rollout["is_init"][500].item()
    env.close()


def test_num_envs_2_batches_and_counts_steps_per_env():
    env = make_env("Pendulum-v1", seed=0, num_envs=2)
    rollout = env.rollout(3)
    assert rollout.shape == (2, 3) and rollout["observation"].shape == (2, 3, 3)
    assert rollout["next", "step_count"].squeeze(-1).tolist() == [[1, 2, 3], [1, 2, 3]]
    assert not torch.equal(rollout["observation"][0, 0], rollout["observation"][1, 0])  # different seeds
    env.close()


@pytest.mark.parametrize("task,needle", [("NoSuchEnv-v0", "unknown task"), ("cartpole-nope", "unknown task"),
                                          ("CartPole-v1", "discrete actions")])
def test_bad_tasks_raise_config_error(task, needle):
    with pytest.raises(ConfigError, match=needle):
        task_info(task)
