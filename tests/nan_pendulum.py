"""Fault injection: a Pendulum whose observation is NaN at one env step (``task=nan_pendulum:NaNPendulum-v0``)."""

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

NAN_AT = 150  # the process's 150th env step returns a NaN observation


class NaNPendulum(PendulumEnv):
    steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        NaNPendulum.steps += 1
        if NaNPendulum.steps == NAN_AT:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


gym.register("NaNPendulum-v0", entry_point=NaNPendulum, max_episode_steps=200)
