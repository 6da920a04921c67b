"""The replay buffer: a ``TensorDictReplayBuffer`` with a ``SliceSampler`` over trajectories.

Transitions of several envs arrive interleaved (a collector batch is ``[num_envs, T]``), so the sampler runs in
TorchRL's ``fragmented`` mode: a trajectory is rebuilt from its id (``("collector", "traj_ids")``) and
``step_count``, never from storage adjacency, and a slice never crosses two trajectories. Ids must stay unique for
the buffer's lifetime: a resumed run's fresh collector restarts its ids at 0, so ``add`` shifts them by an offset.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

from .config import ConfigError

TRAJ_KEY = ("collector", "traj_ids")
STEP_KEY = "step_count"
_DROP = ("planner_mean", ("next", "planner_mean"))  # the planner's warm start: not needed for learning


def make_replay_buffer(*, capacity: int, batch_size: int, horizon: int, storage: str = "memory",
                       scratch_dir: str | Path | None = None, device: torch.device | str = "cpu"
                       ) -> TensorDictReplayBuffer:
    """A buffer whose ``sample()`` returns ``batch_size`` slices of ``horizon`` transitions, flattened."""
    if storage == "memory":
        store = LazyTensorStorage(capacity, device=device)
    elif storage == "memmap":
        store = LazyMemmapStorage(capacity, scratch_dir=str(scratch_dir) if scratch_dir else None, device=device)
    else:
        raise ConfigError(f"buffer storage {storage!r} must be 'memory' or 'memmap'")
    sampler = SliceSampler(slice_len=horizon, traj_key=TRAJ_KEY, step_key=STEP_KEY, fragmented=True,
                           strict_length=True, truncated_key=None)
    rb = TensorDictReplayBuffer(storage=store, sampler=sampler, batch_size=batch_size * horizon)
    rb.horizon = horizon  # read by sample_batch
    return rb


def next_traj_offset(rb: TensorDictReplayBuffer) -> int:
    """One more than the largest trajectory id stored (0 for an empty buffer)."""
    if len(rb) == 0:
        return 0
    return int(rb.storage[: len(rb)].get(TRAJ_KEY).max()) + 1


def add(rb: TensorDictReplayBuffer, data: TensorDictBase, traj_offset: int = 0) -> None:
    """Store a collector batch (``[T]`` or ``[num_envs, T]``) with trajectory ids shifted by ``traj_offset``."""
    data = data.exclude(*_DROP).reshape(-1)
    if traj_offset:
        data.set(TRAJ_KEY, data.get(TRAJ_KEY) + traj_offset)
    rb.extend(data)


def sample_batch(rb: TensorDictReplayBuffer) -> TensorDictBase:
    """A ``[B, H]`` batch of slices (time second), the layout ``TDMPC2Loss`` reads."""
    sample = rb.sample()
    return sample.reshape(-1, rb.horizon)
