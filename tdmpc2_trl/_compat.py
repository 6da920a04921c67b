"""Every use of a private TorchRL internal (and of the one ``nn.Module`` internal a TorchRL behaviour calls for),
one small function or mixin each.

The rest of the package uses TorchRL's and tensordict's public API only; ``tests/test_compat.py`` fails when a
private name is touched anywhere else. Each wrapper names the TorchRL versions that need it and the upstream
change that would let it go. "0.14.1" is the release; "nightly" is ``torchrl-nightly`` 2026.10.27 with
``tensordict-nightly`` 2026.10.26, which carry TorchRL 0.15's changes (0.15 itself was not available to check).
Every wrapper below is needed, unchanged, by both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tensordict import TensorDict, TensorDictBase

if TYPE_CHECKING:  # annotations only: importing this module stays as light as importing tensordict
    from datetime import timedelta

    import torch
    from torchrl.collectors import BaseCollector
    from torchrl.data import ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SliceSampler
    from torchrl.data.replay_buffers.storages import Storage
    from torchrl.envs import EnvBase
    from torchrl.envs.batched_envs import BatchedEnvBase
    from torchrl.objectives import LossModule

__all__ = [
    "NoIndexWriteback",
    "allocate_storage",
    "batched_env_copies",
    "raise_ray_weight_sync_timeout",
    "restore_last_cursor",
    "saved_storage",
    "shutdown_weight_sync",
    "target_params",
    "trajectory_bounds",
    "wrapped_env",
]


# ---- replay buffer (data.py) ----


class NoIndexWriteback:
    """Replay-buffer mixin: ``extend`` does not write the storage index back into the extended batch.

    Needed by 0.14.1 and nightly: ``TensorDictReplayBuffer._set_index_in_td`` cannot reshape the index of a
    ``[num_envs, 1]`` batch written to a 2-d storage and raises. Removable once upstream reshapes the index by the
    storage's ``ndim`` (or offers a public switch to skip the write-back, which is only informative here).
    """

    def _set_index_in_td(self, tensordict: TensorDictBase, index: torch.Tensor) -> None:
        return None


def allocate_storage(storage: Storage, example: TensorDictBase) -> None:
    """Allocate a lazy storage's tensors (for ``LazyMemmapStorage``: its files under ``scratch_dir``) shaped like
    ``example``'s, before ``load_state_dict`` fills them.

    Needed by 0.14.1 and nightly: ``LazyMemmapStorage.load_state_dict`` on an uninitialized storage loads into
    anonymous temporary memory maps, ignoring ``scratch_dir``, and the storage has no public ``init``. Removable
    once upstream loads into ``scratch_dir`` (or makes ``_init`` public).
    """
    storage._init(example)


def saved_storage(state_dict: dict[str, Any]) -> TensorDictBase | None:
    """The stored TensorDict of a ``TensorDictReplayBuffer.state_dict()`` (tensors by reference), or ``None`` if
    the buffer was empty.

    Needed by 0.14.1 and nightly: the layout (``"_storage"`` inside ``"_storage"``, with ``"initialized"``) is
    TorchRL's private format. Removable once the storage exposes a public way to read a saved state's contents.
    """
    saved = state_dict["_storage"]
    if not saved.get("initialized") or not saved["_storage"]:
        return None
    return TensorDict().load_state_dict(saved["_storage"], strict=False)


def saved_rows_and_cursor(state_dict: dict[str, Any]) -> tuple[int, int]:
    """The number of rows written and the writer's cursor of a ``TensorDictReplayBuffer.state_dict()`` (a full
    ring buffer's oldest row is at the cursor).

    Needed by 0.14.1 and nightly: both live in TorchRL's private state format (``"_storage"``/``"_len"``,
    ``"_writer"``/``"_cursor"``). Removable once a saved buffer can be read back in time order publicly.
    """
    return int(state_dict["_storage"]["_len"]), int(state_dict["_writer"]["_cursor"])


def restore_last_cursor(rb: ReplayBuffer) -> None:
    """After loading a full ring buffer, tell its storage which row was written last (the row before the
    writer's cursor), so ``SliceSampler`` cuts trajectories at the overwrite point again.

    Needed by 0.14.1 and nightly: the writer's cursor is saved, the storage's last-written row is not, and neither
    is public. Removable once ``TensorStorage.state_dict`` saves ``_last_cursor``.
    """
    storage = rb.storage
    if storage.initialized and storage._is_full:
        storage._set_last_cursor((int(rb._writer._cursor) - 1) % storage.shape[0])


# ---- collectors (collectors.py) ----


def raise_ray_weight_sync_timeout(timeout: timedelta) -> None:
    """Give the Ray weight-sync rendezvous at least ``timeout`` (read when a ``RayCollector`` connects).

    Needed by 0.14.1 and nightly: ``torchrl.weight_update._ray`` allows a fixed 60 s, which includes starting a
    fresh Ray worker process: too short on a busy machine. Removable once ``RayWeightSyncScheme`` takes a
    ``timeout`` argument.
    """
    from torchrl.weight_update import _ray

    _ray._DIST_TIMEOUT = max(_ray._DIST_TIMEOUT, timeout)


def shutdown_weight_sync(collector: BaseCollector) -> None:
    """Shut down the weight-sync schemes a collector created (none: nothing to do).

    Needed by 0.14.1 and nightly: ``MultiSyncCollector.shutdown`` leaves its ``SharedMemWeightSyncScheme`` to
    ``__del__``, whose final queue put hangs at interpreter exit, and the schemes are private. Removable once
    the collector's ``shutdown`` shuts its schemes down.
    """
    for scheme in (getattr(collector, "_weight_sync_schemes", None) or {}).values():
        scheme.shutdown()


# ---- envs (video.py, render.py) ----


def batched_env_copies(env: BatchedEnvBase) -> Sequence[EnvBase] | None:
    """The env copies a ``SerialEnv`` steps in this process; ``None`` for a ``ParallelEnv`` (copies in workers).

    Needed by 0.14.1 and nightly: batched envs keep their copies private. Removable once they are public.
    """
    return getattr(env, "_envs", None)


def wrapped_env(env: EnvBase) -> Any:
    """The library env a TorchRL wrapper steps (the gymnasium env of ``GymEnv``, the dm_control env of
    ``DMControlEnv``), or ``None`` for an env that wraps nothing.

    Needed by 0.14.1 and nightly: ``_EnvWrapper`` keeps it private. Removable once wrappers expose it.
    """
    return getattr(env, "_env", None)


# ---- loss (loss.py) ----


def target_params(loss: LossModule, name: str) -> TensorDictBase:
    """The target parameters ``name`` (e.g. ``"target_qvalue_network_params"``) a ``LossModule`` registered, read
    without ``LossModule.__getattr__``.

    Needed by 0.14.1 and nightly: that ``__getattr__`` warns on every read made before a target updater
    (``SoftUpdate``) exists, which includes building the optimisers and the updater itself. Removable once
    upstream warns only when the target is used in a loss (or offers a public accessor).
    """
    return loss._modules[name]


# ---- slice sampling (data.py) ----


def trajectory_bounds(sampler: SliceSampler, storage: Storage) -> tuple[torch.Tensor, torch.Tensor]:
    """``SliceSampler``'s stored trajectories: each one's first ``(row, column)`` ``[N, 2]`` and its length ``[N]``.

    0.14.1 and nightly: ``_get_stop_and_length`` (cached per storage write with ``cache_values=True``) is the only
    way to them; a sampler that draws its own slices over the same trajectories needs it. Removable once upstream
    exposes the trajectory table, or lets ``span``/``pad_output`` pad every slice that runs past an episode's end
    (0.14.1 pads only when some trajectory is shorter than the slice).
    """
    start, _, lengths = sampler._get_stop_and_length(storage)
    return start, lengths
