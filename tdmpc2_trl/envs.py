"""Environments from one ``task=`` name: DMControl ``domain-task`` names or gymnasium ids, as TorchRL envs.

Every env the agent sees has actions in [-1, 1] (``ActionScaling`` maps them to the env's bounds), a float
``observation``, and the keys ``step_count``, ``is_init`` and ``episode_reward`` (``StepCounter``, ``InitTracker``,
``RewardSum``). DMControl tasks use action repeat 2 (``FrameSkipTransform``), so a 1000-step episode is 500
agent decisions, as in TD-MPC2.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torchrl.envs import (
    ActionScaling, CatTensors, Compose, DoubleToFloat, EnvBase, FrameSkipTransform, InitTracker, RewardSum, SerialEnv,
    StepCounter, Transform, TransformedEnv,
)

from .config import ConfigError

DMC_ACTION_REPEAT = 2
DMC_EPISODE_STEPS = 1000  # physics-control steps per DMControl episode (before action repeat)
# TD-MPC2's short names for suite domains
_DMC_DOMAIN_ALIASES = {"cup": "ball_in_cup", "pointmass": "point_mass"}
# gymnasium ids whose episodes can end by termination (not just the time limit): TD-MPC2's "episodic" tasks
_GYM_EPISODIC_PREFIXES = ("Hopper", "Walker2d", "Ant", "Humanoid", "InvertedPendulum", "InvertedDoublePendulum",
                          "LunarLanderContinuous", "BipedalWalker", "MountainCarContinuous")


@dataclass(frozen=True)
class TaskInfo:
    """What the agent needs to know about a task before building anything."""

    name: str
    family: str  # "dmc" | "gym"
    episode_length: int  # agent decisions per episode (after action repeat)
    episodic: bool  # episodes can terminate before the time limit
    obs_dim: int
    action_dim: int
    action_repeat: int = 1


@functools.cache
def _dmc_tasks() -> tuple[str, ...]:
    from dm_control import suite

    return tuple(sorted(f"{d}-{t}" for d, t in suite.ALL_TASKS))


def _split_dmc(task: str) -> tuple[str, str] | None:
    """``"cartpole-swingup"`` → ``("cartpole", "swingup")`` if it names a DMControl suite task, else ``None``."""
    if "-" not in task or task[0].isupper():
        return None
    domain, name = task.split("-", 1)
    domain = _DMC_DOMAIN_ALIASES.get(domain, domain)
    name = name.replace("-", "_")
    return (domain, name) if f"{domain}-{name}" in _dmc_tasks() else None


def _unknown(task: str) -> ConfigError:
    return ConfigError(f"unknown task {task!r}: use a DMControl task ({', '.join(_dmc_tasks())}) "
                       f"or any registered gymnasium id with continuous actions (e.g. Pendulum-v1, Hopper-v5)")


@functools.cache
def task_info(task: str) -> TaskInfo:
    """Episode length, episodic flag and obs/action sizes of a task (builds the env once to read its specs)."""
    dmc = _split_dmc(task)
    if dmc is not None:
        env = _base_env(task)
        info = TaskInfo(task, "dmc", DMC_EPISODE_STEPS // DMC_ACTION_REPEAT, False, _obs_dim(env),
                        env.action_spec.shape[-1], DMC_ACTION_REPEAT)
    else:
        spec = _gym_spec(task)
        env = _base_env(task)
        length = spec.max_episode_steps or 1000
        info = TaskInfo(task, "gym", int(length), task.startswith(_GYM_EPISODIC_PREFIXES), _obs_dim(env),
                        env.action_spec.shape[-1])
    env.close()
    return info


def _gym_spec(task: str):
    import gymnasium as gym

    try:
        return gym.spec(task)
    except Exception:  # gymnasium raises several NameNotFound/VersionNotFound/… errors
        raise _unknown(task) from None


def _obs_dim(env: EnvBase) -> int:
    return int(env.observation_spec["observation"].shape[-1])


def _base_env(task: str, seed: int | None = None) -> TransformedEnv:
    """One env with float ``observation`` and actions in [-1, 1]; DMControl also gets action repeat."""
    dmc = _split_dmc(task)
    if dmc is not None:
        from torchrl.envs import DMControlEnv

        env = DMControlEnv(*dmc)
        obs_keys = [k for k in env.observation_spec.keys() if k != "pixels"]
        transforms: list[Transform] = [CatTensors(obs_keys, "observation", del_keys=True), DoubleToFloat(),
                                       FrameSkipTransform(DMC_ACTION_REPEAT)]
    else:
        from torchrl.envs import GymEnv

        _gym_spec(task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = GymEnv(task)
        if not _is_continuous(env):
            env.close()
            raise ConfigError(f"task {task!r} has discrete actions; TD-MPC2 needs a continuous (Box) action space")
        transforms = [DoubleToFloat()]
    env = TransformedEnv(env, Compose(*transforms, ActionScaling()))
    if seed is not None:
        env.set_seed(seed)
    return env


def _is_continuous(env: EnvBase) -> bool:
    spec = env.action_spec
    return spec.dtype.is_floating_point and hasattr(spec.space, "low")


def make_env(task: str, *, seed: int = 0, num_envs: int = 1, device: torch.device | str = "cpu",
             transforms: Sequence[Transform] = ()) -> TransformedEnv:
    """The agent's env: ``num_envs`` copies in a ``SerialEnv`` (seeds ``seed, seed+1, …``) when ``num_envs > 1``.

    The episode bookkeeping (``StepCounter``, ``InitTracker``, ``RewardSum``) and ``transforms`` sit outside the
    batch, so they see every env's partial resets.
    """
    info = task_info(task)
    if num_envs < 1:
        raise ConfigError(f"num_envs={num_envs} must be >= 1")
    if num_envs == 1:
        base: EnvBase = _base_env(task, seed)
    else:
        base = SerialEnv(num_envs, [functools.partial(_base_env, task, seed + i) for i in range(num_envs)])
    env = TransformedEnv(base, Compose(StepCounter(max_steps=info.episode_length), InitTracker(), RewardSum(),
                                       *transforms), device=torch.device(device))
    if num_envs > 1:
        env.set_seed(seed)
    return env
