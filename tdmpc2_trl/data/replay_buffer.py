"""The replay buffer: a ``TensorDictReplayBuffer`` whose ``SliceSampler`` draws ``[B, H]`` trajectory slices.

Layout: the storage is two-dimensional, ``[capacity / num_envs, num_envs]`` (time first, one column per env),
and a collector batch ``[num_envs, T]`` is written as ``T`` new rows. Each env's transitions are therefore
contiguous in time within its column, whatever ``T`` is (the recipe collects ``T = 1`` step per batch), so the
sampler finds trajectories where ``("collector", "traj_ids")`` changes down a column, and a slice never crosses
two trajectories (nor the ring buffer's write cursor). Boundaries are computed once per write and cached
(``cache_values=True`` is keyed on the storage's write revision), so a sample costs O(batch), not O(capacity).
TorchRL's alternative for interleaved data, ``fragmented=True``, re-sorts the whole buffer after every write
(about 150 ms per sample at 1M transitions on this CPU, against about 6 ms here).

Trajectory ids must differ between consecutive trajectories of a column: a resumed run's fresh collector
restarts its ids at 0, so ``add`` shifts them by ``next_traj_offset(buffer)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import ConfigError

__all__ = [
    "MASK_KEY",
    "EpisodeEndSliceSampler",
    "SliceReplayBuffer",
    "add",
    "make_replay_buffer",
    "next_traj_offset",
    "ordinal_device",
    "sample_batch",
]

TRAJ_KEY = ("collector", "traj_ids")
MASK_KEY = ("collector", "mask")  # TorchRL's key for the real (True) and padded (False) steps of a padded slice
STEP_KEY = "step_count"
# the planner's warm start rides in the collector's output but is not needed for learning
EXCLUDED_KEYS = ("planner_mean", ("next", "planner_mean"))


class SliceReplayBuffer(_compat.NoIndexWriteback, TensorDictReplayBuffer):
    """``TensorDictReplayBuffer`` over a ``[rows, num_envs]`` storage that accepts ``[T]`` or ``[num_envs, T]``.

    ``horizon`` is the slice length (``sample_batch`` reshapes to ``[B, horizon]``). ``batch_device``: the model's
    device, where ``sample_batch`` sends each batch (the storage itself stays on the CPU). ``extend`` does not write
    the storage index into the batch (``NoIndexWriteback``: TorchRL fails to reshape it for ``[num_envs, 1]`` batches).
    """

    def __init__(self, *, horizon: int, batch_device: torch.device | str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.horizon, self.batch_device = horizon, ordinal_device(batch_device)

    @property
    def num_envs(self) -> int | None:
        """The storage's column count once the first batch fixed it, else ``None``."""
        shape = self.storage.shape
        return None if shape is None else int(shape[1])

    def extend(self, tensordicts: TensorDictBase, **kwargs: Any) -> torch.Tensor:
        data = tensordicts.exclude(*EXCLUDED_KEYS)
        if data.ndim == 1:  # one env's [T] rollout
            data = data.unsqueeze(0)
        elif data.ndim > 2:
            data = data.reshape(-1, data.shape[-1])
        if self.num_envs not in (None, data.shape[0]):
            raise ConfigError(
                f"the replay buffer holds {self.num_envs} env columns but got a batch of "
                f"{data.shape[0]} envs: keep num_envs (times collector.workers) fixed for a buffer "
                f"(and across a resume)"
            )
        return super().extend(data, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        storage = self.storage
        if isinstance(storage, LazyMemmapStorage) and not storage.initialized:
            # allocate the memory maps under scratch_dir first; otherwise TorchRL loads into anonymous temp maps
            saved = _compat.saved_storage(state_dict)
            if saved is not None:
                _compat.allocate_storage(storage, saved[0])
        super().load_state_dict(state_dict)
        # the sampler cuts trajectories at the last written row of a full ring buffer, which TorchRL does not
        # save (else one trajectory longer than the buffer would look continuous across the overwrite point)
        _compat.restore_last_cursor(self)

    def loads(self, path: str | Path) -> None:
        super().loads(path)
        _compat.restore_last_cursor(self)


class EpisodeEndSliceSampler(SliceSampler):
    """Slices that may start at every stored transition, also the last ``horizon - 1`` of a trajectory.

    ``SliceSampler(strict_length=True)`` (and the official buffer) start a slice only where ``horizon`` transitions
    of the same trajectory follow, so the last ``horizon - 1`` transitions of an episode are never a slice's first
    step. The value loss then trains their Q only on dynamics latents, never on ``encode(obs)``, which is what every
    TD target bootstraps from; on a task that terminates the value of the terminal step never reaches the targets
    (results/README.md, "Hopper-v5 so far"). Here a trajectory is drawn uniformly (as ``SliceSampler``), then a
    start among all its transitions; steps past its end repeat its last transition and are ``False`` in
    ``("collector", "mask")``, which ``TDMPC2Loss`` weights 0.

    TorchRL's ``span=(False, True)`` draws such starts, but 0.14.1 pads them (``pad_output``) only when some stored
    trajectory is shorter than the slice; otherwise the short slices come back unpadded and unmasked.
    """

    def sample(self, storage, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        first, lengths = _compat.trajectory_bounds(self, storage)
        horizon = self.slice_len
        device = lengths.device
        traj = torch.randint(lengths.shape[0], (batch_size // horizon, 1), device=device)
        length = lengths[traj]
        start = (torch.rand(length.shape, device=device) * length).floor().long()
        step = start + torch.arange(horizon, device=device)
        mask = step < length
        rows = (first[traj, 0] + torch.minimum(step, length - 1)) % storage.shape[0]
        info = {MASK_KEY: mask.reshape(-1)}
        if first.shape[-1] == 1:  # a one-dimensional storage (an offline dataset's transitions)
            return rows.reshape(-1), info
        cols = first[traj, 1].expand_as(rows)
        return (rows.reshape(-1), cols.reshape(-1)), info


def make_slice_sampler(horizon: int, traj_key: Any, episode_end_slices: bool) -> SliceSampler:
    """Slices of ``horizon`` steps inside one trajectory of ``traj_key``: TD-MPC2's (strict) or, with
    ``episode_end_slices``, also starting in a trajectory's last steps, padded and masked."""
    cls = EpisodeEndSliceSampler if episode_end_slices else SliceSampler
    return cls(
        slice_len=horizon, traj_key=traj_key, strict_length=True, truncated_key=None, init_key=None, cache_values=True
    )


def ordinal_device(device: torch.device | str) -> torch.device:
    """``device`` with its index: plain ``cuda`` is the current CUDA device (what a tensor moved there reports)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def make_replay_buffer(
    *,
    capacity: int,
    batch_size: int,
    horizon: int,
    storage: str = "memory",
    scratch_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    episode_end_slices: bool = False,
) -> SliceReplayBuffer:
    """A buffer of about ``capacity`` transitions whose ``sample()`` returns ``batch_size`` slices of
    ``horizon`` transitions, flattened to ``[batch_size * horizon]`` (``sample_batch`` gives ``[B, H]``).

    ``storage="memory"`` keeps it in RAM; ``"memmap"`` memory-maps it under ``scratch_dir``. Either way it is on the
    CPU, whatever ``device`` is: ``device`` is the model's, where ``sample_batch`` moves each batch. A GPU holds a
    batch at a time, not ``capacity`` transitions (a pixel transition is 74 KB), and TorchRL cannot memory-map on
    a GPU at all.
    ``episode_end_slices``: slices may also start in an episode's last ``horizon - 1`` transitions, padded and
    masked past its end (``EpisodeEndSliceSampler``); the default is TD-MPC2's sampling.

    Examples:
        >>> import torch
        >>> from tdmpc2_trl import make_env, make_replay_buffer
        >>> from tdmpc2_trl.data.replay_buffer import add, sample_batch
        >>> data = make_env("Pendulum-v1", seed=0).rollout(20)  # what a collector gives, with trajectory ids
        >>> data["collector", "traj_ids"] = torch.zeros(20, dtype=torch.long)
        >>> buffer = make_replay_buffer(capacity=100, batch_size=4, horizon=3)
        >>> add(buffer, data)
        >>> batch = sample_batch(buffer)  # [B, H] slices inside one trajectory
        >>> batch.batch_size
        torch.Size([4, 3])
        >>> bool((batch["next", "observation"][:, :-1] == batch["observation"][:, 1:]).all())
        True
    """
    if capacity < horizon or batch_size < 1 or horizon < 1:
        raise ConfigError(
            f"replay buffer: need capacity >= horizon >= 1 and batch_size >= 1 "
            f"(capacity={capacity}, horizon={horizon}, batch_size={batch_size})"
        )
    if storage == "memory":
        store = LazyTensorStorage(capacity, device="cpu", ndim=2)
    elif storage == "memmap":
        scratch = str(scratch_dir) if scratch_dir is not None else None
        store = LazyMemmapStorage(capacity, scratch_dir=scratch, device="cpu", ndim=2)
    else:
        raise ConfigError(f"buffer storage {storage!r} must be 'memory' or 'memmap'")
    sampler = make_slice_sampler(horizon, TRAJ_KEY, episode_end_slices)
    return SliceReplayBuffer(
        horizon=horizon, batch_device=device, storage=store, sampler=sampler, batch_size=batch_size * horizon
    )


def next_traj_offset(rb: SliceReplayBuffer) -> int:
    """One more than the largest trajectory id stored (0 for an empty buffer)."""
    if len(rb) == 0:
        return 0
    return int(rb.storage[:].get(TRAJ_KEY).max()) + 1


def add(rb: SliceReplayBuffer, data: TensorDictBase, traj_offset: int = 0) -> None:
    """Store a collector batch (``[T]`` or ``[num_envs, T]``) with trajectory ids shifted by ``traj_offset``."""
    if traj_offset:
        data = data.clone(False)  # shallow: the collector's own batch keeps its ids
        data.set(TRAJ_KEY, data.get(TRAJ_KEY) + traj_offset)
    rb.extend(data)


def sample_batch(rb: SliceReplayBuffer) -> TensorDictBase:
    """A ``[B, H]`` batch of slices (time second), the layout ``TDMPC2Loss`` reads, on ``rb.batch_device``.

    ``observation[:, t]`` and ``("next", "observation")[:, t]`` are obs_t and obs_{t+1}; bootstrap on
    ``("next", "terminated")`` only (the stored flags are returned untouched).
    """
    batch = rb.sample().reshape(-1, rb.horizon)
    if rb.batch_device.type == "cuda":
        batch = batch.pin_memory()  # page-locked, so that the copy below runs asynchronously
    return batch.to(rb.batch_device, non_blocking=True)
