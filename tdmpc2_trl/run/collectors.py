"""The training collector: one process (``collector.workers=1``), K worker processes, or K Ray actors.

``make_collector`` returns a TorchRL collector whose batches the recipe adds to the replay buffer as they come:

- ``workers=1, backend=local``: TorchRL's ``Collector``, building its env in the training process.
- ``workers=K>1, backend=local``: ``MultiSyncCollector`` with K spawned processes, each stepping ``num_envs`` envs
  with its own copy of the planner; weights reach the workers through shared memory (``push_weights``).
- ``backend=ray``: ``RayCollector`` with K Ray actors (a local Ray instance, or the cluster at
  ``collector.ray_address``); weights go over a Gloo channel that TorchRL sets up through Ray.

Both multi-worker collectors are synchronous: each batch holds one step of every env of every worker, so the
replay buffer (``data.py``) gets ``K * num_envs`` columns that always hold the same envs, and a slice down a
column never leaves one env. ``WorkerBatch`` flattens the ``[K, num_envs, T]`` (``[K, T]`` for one env per
worker) batch to ``[K * num_envs, T]`` and makes trajectory ids unique across workers (Ray actors number their
trajectories independently), so no slice can join two trajectories.

All envs come from one ``envs.EnvFactory``; worker ``w``'s copies get seeds ``seed + w * num_envs + i``: K workers
of N envs use the seeds of one process with ``num_envs = K * N``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.collectors import BaseCollector, Collector, MultiSyncCollector
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import CollectorConfig, ConfigError
from tdmpc2_trl.envs.factory import EnvFactory
from tdmpc2_trl.planning.planner import TDMPC2Planner

__all__ = ["WorkerBatch", "WorkerEnv", "check_collector_config", "make_collector", "push_weights"]

TRAJ_KEY = ("collector", "traj_ids")
RAY_CONNECT_TIMEOUT = timedelta(minutes=10)  # see _make_ray_collector


def check_collector_config(cfg: CollectorConfig) -> None:
    """One-line ``ConfigError`` for ``collector.backend=ray`` without Ray installed (ranges: ``config.check``)."""
    if cfg.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("collector.backend=ray needs Ray, which is not installed: pip install -e .[ray]")


@dataclass(frozen=True)
class WorkerEnv:
    """Worker ``worker``'s env: ``env`` seeded from ``env.seed + worker * env.num_envs``.

    Called in a worker process it also seeds that process's torch RNG (the planner's noise and the random seed
    steps) and sets its torch threads; called in the process that built it, it only builds the env.
    """

    env: EnvFactory
    worker: int
    threads: int = 1
    parent_pid: int = field(default_factory=os.getpid)

    @property
    def env_seed(self) -> int:
        return self.env.seed + self.worker * self.env.num_envs

    def __call__(self) -> EnvBase:
        if os.getpid() != self.parent_pid:
            torch.manual_seed(self.env_seed)
            torch.set_num_threads(self.threads)
        return self.env.replace(seed=self.env_seed)()


@dataclass(frozen=True)
class WorkerBatch:
    """Collector post-processing: ``[K, num_envs, T]`` or ``[K, T]`` → ``[K * num_envs, T]`` (worker-major
    columns), trajectory id ``i`` of worker ``w`` → ``i * K + w``: unique across workers, stable over time."""

    workers: int

    def __call__(self, data: TensorDictBase) -> TensorDictBase:
        if data.batch_size[0] != self.workers:
            raise ValueError(f"expected a batch stacked over {self.workers} workers, got shape {tuple(data.shape)}")
        data = data.clone(False)  # shallow: the collector's buffers keep their ids
        data.names = None
        ids = data.get(TRAJ_KEY)
        worker = torch.arange(self.workers, device=ids.device).view(-1, *[1] * (ids.ndim - 1))
        data.set(TRAJ_KEY, ids * self.workers + worker)
        return data.reshape(-1, data.shape[-1]) if data.ndim > 2 else data


class _MultiSyncCollector(MultiSyncCollector):
    """``MultiSyncCollector`` whose ``shutdown`` also stops its weight-sync scheme.

    TorchRL (0.14.1, nightly) leaves the ``SharedMemWeightSyncScheme`` to ``__del__``; at interpreter exit its final
    ``Queue.put`` must start a feeder thread, which can no longer start, and the process hangs. ``make_collector``
    also registers ``shutdown`` with ``atexit``, which runs while threads can still start.
    """

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().shutdown(*args, **kwargs)
        finally:
            _compat.shutdown_weight_sync(self)


class _RayWorker(Collector):
    """TorchRL's ``Collector`` with a one-line repr: Ray prefixes every log line of an actor with its repr."""

    def __repr__(self) -> str:
        return "TDMPC2RayWorker"


def make_collector(
    env: EnvFactory,
    cfg: CollectorConfig,
    planner: TDMPC2Planner,
    *,
    total_frames: int,
    init_random_frames: int,
    device: torch.device | str = "cpu",
    threads: int = 1,
) -> BaseCollector:
    """The collector ``cfg`` asks for (see the module docstring), yielding ``total_frames`` env steps, the first
    ``init_random_frames`` of them with uniformly random actions.

    ``env`` builds the envs (with ``planner.primer()`` among its transforms): once in this process for one local
    worker, once per worker (``WorkerEnv``: its own seeds) otherwise. ``threads``: torch threads of each worker.
    """
    check_collector_config(cfg)
    workers = cfg.workers
    # the envs step on the CPU (numpy underneath: no copy to the GPU and back per step, no tiny transform kernels),
    # the planner on the run's device, and the batches are stored on the CPU, where the replay buffer lives
    devices = dict(
        env_device=torch.device("cpu"), policy_device=torch.device(device), storing_device=torch.device("cpu")
    )
    if cfg.backend == "local" and workers == 1:
        return Collector(
            env,
            planner,
            frames_per_batch=env.num_envs,
            total_frames=total_frames,
            init_random_frames=init_random_frames,
            exploration_type=ExplorationType.RANDOM,
            **devices,
        )
    env_fns = [WorkerEnv(env, w, threads) for w in range(workers)]
    common = dict(
        frames_per_batch=workers * env.num_envs,
        total_frames=total_frames,
        init_random_frames=init_random_frames,
        exploration_type=ExplorationType.RANDOM,
        postproc=WorkerBatch(workers),
        **devices,
    )
    if cfg.backend == "local":
        collector = _MultiSyncCollector(
            env_fns,
            planner,
            num_threads=torch.get_num_threads(),
            num_sub_threads=threads,
            cat_results="stack",
            **common,
        )
        atexit.register(collector.shutdown)  # an error that skips the caller's shutdown must not hang the exit
        return collector
    return _make_ray_collector(env_fns, planner, cfg.ray_address, device, common)


def _make_ray_collector(
    env_fns: Sequence[WorkerEnv],
    planner: TDMPC2Planner,
    address: str | None,
    device: torch.device | str,
    common: dict[str, Any],
) -> BaseCollector:
    """``RayCollector`` with one ``Collector`` actor per env factory; starts Ray (or joins ``address``)."""
    from torchrl.collectors.distributed import RayCollector

    # TorchRL's 60 s weight-sync rendezvous includes starting a fresh Ray worker process: too short when busy
    _compat.raise_ray_weight_sync_timeout(RAY_CONNECT_TIMEOUT)

    workers = len(env_fns)
    if address is None:  # a new local instance (never a running one), a CPU per worker even on fewer cores
        init = {"address": "local", "num_cpus": max(workers, os.cpu_count() or 1), "include_dashboard": False}
    else:
        init = {"address": address}
    remote = {"num_cpus": 1}
    if torch.device(device).type == "cuda":
        remote["num_gpus"] = 1 / workers
    try:
        collector = RayCollector(
            list(env_fns),
            planner,
            collector_class=_RayWorker,
            num_collectors=workers,
            sync=True,
            ray_init_config=init,
            remote_configs=remote,
            **common,
        )
    except ConnectionError as err:  # ray.init's answer to an unreachable (or token-protected) cluster
        raise ConfigError(
            f"collector.ray_address={address}: {err} (a cluster with token authentication also "
            f"needs RAY_AUTH_MODE=token and its token here)"
        ) from None
    collector.update_policy_weights_(planner)  # connects the weight-sync channel before the first batch
    return collector


def push_weights(collector: BaseCollector, planner: TDMPC2Planner) -> None:
    """Send the planner's current weights to the collector's workers (the single-process ``Collector`` runs
    the training process's planner itself and needs nothing)."""
    if type(collector) is not Collector:
        collector.update_policy_weights_(planner)
