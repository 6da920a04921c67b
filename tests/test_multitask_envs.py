"""Envs of different tasks in one batched env and one batched planner call (padding transforms, task ids)."""

from __future__ import annotations

import torch
from torchrl.envs import ActionScaling, DoubleToFloat, GymEnv, SerialEnv, TransformedEnv

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.envs.multitask import multitask_transforms
from tdmpc2_trl.networks.tasks import TaskSet, TaskSpec
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner

TASKS = TaskSet((TaskSpec("Pendulum-v1", 3, 1, 200), TaskSpec("Reacher-v5", 10, 2, 50)), task_dim=8)


class TaskEnv:
    """A picklable factory of one task's env in the task set's shared specs."""

    def __init__(self, task: str) -> None:
        self.task = task

    def __call__(self) -> TransformedEnv:
        env = TransformedEnv(GymEnv(self.task), DoubleToFloat())
        env.append_transform(ActionScaling())
        for t in multitask_transforms(TASKS, self.task):
            env.append_transform(t)
        return env


def test_envs_of_different_tasks_share_specs_and_carry_their_task_id():
    env = SerialEnv(2, [TaskEnv("Pendulum-v1"), TaskEnv("Reacher-v5")])
    assert env.action_spec.shape == (2, 2) and env.observation_spec["observation"].shape == (2, 10)
    torch.manual_seed(0)
    rollout = env.rollout(5)
    obs = rollout["next", "observation"]
    assert obs.shape == (2, 5, 10)
    assert torch.equal(obs[0, :, 3:], torch.zeros(5, 7))  # Pendulum's 3 values, then padding
    assert obs[1, :, 3:].abs().sum() > 0
    assert rollout["task"].tolist() == [[0] * 5, [1] * 5]
    assert rollout["next", "task"].tolist() == [[0] * 5, [1] * 5]
    env.close()


def test_one_planner_call_acts_for_envs_of_different_tasks():
    torch.manual_seed(0)
    cfg = load_model_config("1m", latent_dim=16, enc_dim=16, mlp_dim=16)
    model = WorldModel(cfg, TASKS.obs_dim, TASKS.action_dim, task_set=TASKS)
    planner = TDMPC2Planner(model, discount=0.99, horizon=3, num_samples=32, num_pi_trajs=4, num_elites=6, iterations=2)
    env = SerialEnv(2, [TaskEnv("Pendulum-v1"), TaskEnv("Reacher-v5")])
    env.append_transform(planner.primer())
    rollout = env.rollout(4, policy=planner)
    action = rollout["action"]
    assert action.shape == (2, 4, 2)
    assert torch.equal(action[0, :, 1], torch.zeros(4))  # Pendulum's unused second dimension
    assert action[1].abs().sum() > 0
    env.close()


def test_multitask_env_factory_keeps_each_task_episode_length():
    from tdmpc2_trl.envs.multitask import MultitaskEnvFactory
    from tdmpc2_trl.networks.tasks import TaskSpec as Spec

    task_set = TaskSet((Spec("Pendulum-v1", 3, 1, 200), Spec("cartpole-swingup", 5, 1, 500)), task_dim=8)
    factory = MultitaskEnvFactory(task_set, seed=3, envs_per_task=2)
    assert factory.num_envs == 4 and factory.task_ids() == [0, 0, 1, 1]
    env = factory()
    assert env.batch_size == (4,) and env.observation_spec["observation"].shape == (4, 5)
    rollout = env.rollout(210, break_when_any_done=False)
    truncated = rollout["next", "truncated"].squeeze(-1)
    assert truncated[:2, 199].all() and not truncated[2:].any()  # Pendulum ends at 200 steps, cartpole at 500
    assert rollout["task"][:, 0].tolist() == [0, 0, 1, 1]
    env.close()
