"""Every ``null`` of a training config resolved, once, from the config and the task, before anything is built.

The rules live here and only here; ``run/make.py`` applies the same functions to a config that was not resolved (a
benchmark, a test), so a resolved config and an unresolved one build the same objects. The trainer writes the
resolved config into the run's ``config.yaml`` and every checkpoint, and a resumed run takes these values from there
(``run/contract.py``), never from its new command line: that is what keeps the replay buffer's capacity when a
run is extended to more ``steps``.

The planning horizon lives in ``model.horizon`` (each model preset sets it): the planner and the replay buffer's slice
length read it from there, nowhere else.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tdmpc2_trl.networks.math import discount_from_episode_length

if TYPE_CHECKING:  # torch and the env factory are only needed for the type hints
    import torch

    from tdmpc2_trl.config.schema import TrainConfig
    from tdmpc2_trl.envs.factory import TaskInfo

# TD-MPC2's rules where a setting is null (tdmpc2/config.yaml and tdmpc2/tdmpc2.py)
MIN_SEED_STEPS, SEED_EPISODES = 1000, 5  # seed_steps: max(1000, 5 × episode length)
MAX_BUFFER_SIZE = 1_000_000  # buffer.size: min(1M, steps)
OFFICIAL_PRESETS = ("1m", "5m", "19m", "48m", "317m")  # the official model sizes take TD-MPC2's training defaults
OFFICIAL_ENC_LR_SCALE = 0.3
LARGE_ACTION_DIM, LARGE_ACTION_EXTRA_ITERATIONS = 20, 2  # iterations += 2 if action_dim >= 20


def seed_steps(value: int | None, episode_length: int) -> int:
    """``collector.seed_steps``: random steps before the first update; null: max(1000, 5 × episode length)."""
    return value if value is not None else max(MIN_SEED_STEPS, SEED_EPISODES * episode_length)


def buffer_size(value: int | None, steps: int) -> int:
    """``buffer.size``: null holds every step of the run, up to 1M."""
    return value if value is not None else min(MAX_BUFFER_SIZE, steps)


def discount(value: float | None, episode_length: int) -> float:
    """``loss.discount``: null is TD-MPC2's rule from the episode length."""
    return value if value is not None else discount_from_episode_length(episode_length)


def enc_lr_scale(value: float | None, preset: str) -> float:
    """``optim.enc_lr_scale``: null is 0.3 for the official presets, 1.0 (one learning rate) for the others."""
    if value is not None:
        return value
    return OFFICIAL_ENC_LR_SCALE if preset in OFFICIAL_PRESETS else 1.0


def extra_iterations(value: int | None, preset: str, action_dim: int) -> int:
    """``planner.extra_iterations`` (added to ``planner.iterations``): null is 2 for an official preset on an action
    of 20 or more dimensions, else 0."""
    if value is not None:
        return value
    return LARGE_ACTION_EXTRA_ITERATIONS if preset in OFFICIAL_PRESETS and action_dim >= LARGE_ACTION_DIM else 0


def episode_end_slices(value: bool | None, episodic: bool) -> bool:
    """``buffer.episode_end_slices``: null is true for episodic tasks (they terminate), false otherwise."""
    return episodic if value is None else value


def precision(value: str, device: torch.device) -> str:
    """``precision``: ``auto`` becomes ``bf16`` where its matmuls are faster on ``device``, else ``fp32``."""
    from tdmpc2_trl.platform.precision import precision_name, resolve_precision

    return precision_name(resolve_precision(value, device))


def threads(value: int | None) -> int:
    """``threads``: null is torch's own default for this process."""
    import torch

    return value if value is not None else torch.get_num_threads()


def resolve(cfg: TrainConfig, info: TaskInfo, device: torch.device, multitask: bool = False) -> TrainConfig:
    """A copy of ``cfg`` with every null above resolved for the task ``info`` (a multitask run:
    the tasks joined) on ``device``. Idempotent. A multitask run keeps ``loss.discount`` null: each task discounts
    with its own episode length."""
    replace = dataclasses.replace
    model = cfg.model
    return replace(
        cfg,
        precision=precision(cfg.precision, device),
        threads=threads(cfg.threads),
        collector=replace(cfg.collector, seed_steps=seed_steps(cfg.collector.seed_steps, info.episode_length)),
        buffer=replace(
            cfg.buffer,
            size=buffer_size(cfg.buffer.size, cfg.steps),
            episode_end_slices=episode_end_slices(cfg.buffer.episode_end_slices, info.episodic),
        ),
        loss=cfg.loss if multitask else replace(cfg.loss, discount=discount(cfg.loss.discount, info.episode_length)),
        optim=replace(cfg.optim, enc_lr_scale=enc_lr_scale(cfg.optim.enc_lr_scale, model.name)),
        planner=replace(
            cfg.planner, extra_iterations=extra_iterations(cfg.planner.extra_iterations, model.name, info.action_dim)
        ),
    )
