"""Test env for the fault-injection matrix: Pendulum with 20-step episodes (``task=short_pendulum:ShortPendulum-v0``,
``tests`` on ``PYTHONPATH``), so that a run of 130 env steps has seed steps, a burst, a loop and finished episodes.

``NAN_AT=50,120`` (environment variable): the process's 50th and 120th env steps, counted over all its
``ShortPendulum`` envs (training and evaluation), return a NaN observation.
"""

import os

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

EPISODE = 20
NAN_AT = {int(s) for s in os.environ.get("NAN_AT", "").split(",") if s.strip()}


class ShortPendulum(PendulumEnv):
    steps = 0  # env steps of this process, all instances together

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        ShortPendulum.steps += 1
        if ShortPendulum.steps in NAN_AT:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


gym.register("ShortPendulum-v0", entry_point=ShortPendulum, max_episode_steps=EPISODE)
