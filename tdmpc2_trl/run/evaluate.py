"""Evaluation: one batched rollout of K envs (one episode each) with the deterministic planner."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmpc2_trl.envs.video import EpisodeRecorder


@torch.no_grad()
def evaluate(
    env: EnvBase,
    policy,
    max_steps: int,
    recorder: EpisodeRecorder | None = None,
    warn: Callable[[str], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[float]:
    """Return of the first episode of each of the env's batch entries (no exploration noise).

    ``recorder``: an ``EpisodeRecorder`` among the env's transforms; it records the first env's episode.
    ``warn``: called with a message if an env returned a non-finite observation (the first such step).
    ``on_step``: called after each step of the batched rollout (a progress counter).
    """
    if recorder is not None:
        recorder.start()
    try:
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = env.rollout(
                max_steps=max_steps,
                policy=policy,
                break_when_any_done=False,
                auto_cast_to_device=True,
                callback=None if on_step is None else lambda *_: on_step(),
            )
    finally:
        if recorder is not None:
            recorder.stop()
    rollout = rollout.reshape(-1, rollout.shape[-1]) if rollout.ndim > 1 else rollout.unsqueeze(0)
    if warn is not None and (step := first_nonfinite_step(rollout)) is not None:
        warn(f"an evaluation env returned a non-finite observation at its step {step}")
    reward = rollout["next", "reward"].squeeze(-1)  # [K, T]
    done = rollout["next", "done"].squeeze(-1)
    # keep rewards up to and including each env's first done
    before_first_done = (done.long().cumsum(-1) - done.long()) == 0
    return (reward * before_first_done).sum(-1).tolist()


def first_nonfinite_step(rollout: TensorDictBase) -> int | None:
    """The first step (1-based) of a ``[K, T]`` rollout whose next observation is not finite in some env."""
    obs = rollout["next", "observation"]
    bad = (~torch.isfinite(obs.float().reshape(*obs.shape[:2], -1)).all(-1)).any(0)  # [T]
    return None if not bad.any() else int(bad.nonzero()[0]) + 1
