"""A small gymnasium task of the 8m-h10 card's shapes (18 observations, 4 actions), to train with the recipe:

    PYTHONPATH=examples python recipes/train.py task=my_robot_env:MyRobot-v0

A 4-joint arm whose joints are damped double integrators driven by torques; each episode draws a goal posture.
Observation (18): joint angles q (4), velocities dq (4), goal (4), q − goal (4), distance to the goal, time left
(fraction of the episode). Actions: torques in a ``Box`` of per-joint limits (±3 for the two shoulder joints, ±1.5
for the two wrist joints), not ±1: the planner is given the env's bounds. Reward: −distance − 0.01·|torque|².
Termination: a joint leaves its range |q| > 3 rad (the arm hit its stop), with a −10 penalty.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 200
JOINT_LIMIT = 3.0  # rad: beyond it the episode terminates
DT, DAMPING = 0.05, 0.5


class MyRobotEnv(gym.Env):
    """Reach a random goal posture with a 4-joint arm (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        torque = np.array([3.0, 3.0, 1.5, 1.5], dtype=np.float32)
        self.action_space = spaces.Box(-torque, torque, dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(18,), dtype=np.float32)
        self.q = self.dq = self.goal = np.zeros(4)
        self.t = 0

    def _obs(self) -> np.ndarray:
        error = self.q - self.goal
        time_left = 1.0 - self.t / EPISODE_STEPS
        return np.concatenate([self.q, self.dq, self.goal, error, [np.linalg.norm(error), time_left]]).astype(
            np.float32
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.q = self.np_random.uniform(-0.5, 0.5, 4)
        self.dq = np.zeros(4)
        self.goal = self.np_random.uniform(-1.5, 1.5, 4)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        torque = np.clip(action, self.action_space.low, self.action_space.high)
        self.dq = self.dq + DT * (torque - DAMPING * self.dq)
        self.q = self.q + DT * self.dq
        self.t += 1
        distance = float(np.linalg.norm(self.q - self.goal))
        terminated = bool(np.abs(self.q).max() > JOINT_LIMIT)
        reward = -distance - 0.01 * float(np.square(torque).sum()) - (10.0 if terminated else 0.0)
        return self._obs(), reward, terminated, False, {}  # the time limit is gymnasium's TimeLimit (below)


gym.register("MyRobot-v0", entry_point=MyRobotEnv, max_episode_steps=EPISODE_STEPS)
