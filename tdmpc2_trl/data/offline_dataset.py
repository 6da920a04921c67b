"""Offline datasets: transitions of one or more tasks on disk, memory-mapped, in the layout the loss reads.

    python -m tdmpc2_trl.data.offline_dataset export RUN_DIR [RUN_DIR ...] --out DIR    # from this project's runs
    python -m tdmpc2_trl.data.offline_dataset import-official FILE_OR_DIR --tasks mt30 --out DIR   # official mt30/mt80

A dataset directory holds ``dataset.json`` (``{"format": 1, "tasks": [{"name", "obs_dim", "action_dim",
"episode_length"}, ...]}``, in task-id order) and ``data/``, a memory-mapped TensorDict ``[N]`` (tensordict's
``memmap`` format, so it may be larger than RAM) of transitions, each episode's contiguous and in time order::

    observation [N, D], action [N, A] (in [-1, 1]), task [N] (long), episode [N] (long),
    ("next", "observation") [N, D], ("next", "reward") [N, 1], ("next", "terminated") [N, 1] (bool)

Observations and actions are zero-padded to the largest size of the tasks.

The official multitask datasets (mt30: 4 files, mt80: 20) are ``torch.save``-d TensorDicts ``[episodes, T + 1]``
with ``obs``, ``action``, ``reward`` and ``task`` (and ``terminated`` where the task can end), where row ``t`` holds
obs_t and the action and reward that led to it (row 0: NaN), already padded to the task set's sizes
(official ``common/buffer.py``, ``Buffer.load`` and ``_prepare_batch``). ``import-official`` converts them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import TensorStorage

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.data.replay_buffer import TRAJ_KEY, SliceReplayBuffer, make_slice_sampler
from tdmpc2_trl.networks.tasks import TaskSet, TaskSpec, official_task_set
from tdmpc2_trl.platform.checkpoint import resolve_checkpoint

__all__ = ["export_runs", "import_official", "load_dataset", "make_offline_buffer", "write_dataset"]

FORMAT = 1
META = "dataset.json"
DATA = "data"


# ---------------------------------------------------------------- writing and reading


def write_dataset(out: str | Path, tasks: Sequence[TaskSpec], data: TensorDictBase) -> Path:
    """Write ``data`` (``[N]`` transitions, the module's layout) and the task list as a dataset directory."""
    out = Path(out)
    if (out / META).exists():
        raise ConfigError(f"{out} already holds a dataset; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    data.memmap_(prefix=out / DATA)
    meta = {"format": FORMAT, "tasks": [asdict(t) for t in tasks]}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def load_dataset(path: str | Path, task_dim: int = 96) -> tuple[TaskSet, TensorDictBase]:
    """The dataset's task set and its memory-mapped transitions ``[N]`` (nothing is read into RAM yet)."""
    path = Path(path)
    if not (path / META).is_file():
        raise ConfigError(
            f"{path} is not a dataset directory (no {META}); make one with "
            f"`python -m tdmpc2_trl.data.offline_dataset export RUN_DIR --out DIR`"
        )
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path / META}: format {meta.get('format')!r} is not {FORMAT}")
    tasks = TaskSet(tuple(TaskSpec(**t) for t in meta["tasks"]), task_dim)
    return tasks, TensorDict.load_memmap(path / DATA)


def make_offline_buffer(
    data: TensorDictBase,
    *,
    batch_size: int,
    horizon: int,
    episode_end_slices: bool = False,
    device: torch.device | str = "cpu",
) -> SliceReplayBuffer:
    """A buffer over the dataset's transitions whose ``sample()`` gives ``batch_size`` slices of ``horizon`` steps
    of one episode each, flattened; ``data.replay_buffer.sample_batch`` gives the loss's ``[B, H]`` on ``device``
    (the model's; the dataset stays memory-mapped on the CPU).

    ``episode_end_slices``: slices may also start in an episode's last ``horizon - 1`` transitions, padded and
    masked past its end (``data.EpisodeEndSliceSampler``), as in online training."""
    sampler = make_slice_sampler(horizon, "episode", episode_end_slices)
    return SliceReplayBuffer(
        horizon=horizon,
        batch_device=device,
        storage=TensorStorage(data),
        sampler=sampler,
        batch_size=batch_size * horizon,
    )


def check_tasks(dataset_tasks: TaskSet, names: Sequence[str]) -> None:
    """One-line error unless ``names`` lists the dataset's tasks in its order."""
    if list(names) != dataset_tasks.names:
        raise ConfigError(
            f"tasks={list(names)} differ from the dataset's tasks {dataset_tasks.names} "
            f"(same tasks in the same order: the order gives the task ids)"
        )


# ---------------------------------------------------------------- export from this project's runs


def _run_transitions(run_dir: Path) -> tuple[TaskSpec, TensorDictBase]:
    """The replay buffer of a run's newest checkpoint as ``[N]`` transitions, each env's in time order."""
    path, state = resolve_checkpoint(run_dir)
    info = state["task"]
    if info.get("obs", "state") != "state":
        raise ConfigError(f"{run_dir}: only state observations can be exported (this run has obs={info['obs']})")
    spec = TaskSpec(info["name"], int(info["obs_dim"]), int(info["action_dim"]), int(info["episode_length"]))
    buffer_state = state["replay_buffer"]
    stored = _compat.saved_storage(buffer_state)
    if stored is None:
        raise ConfigError(f"{path}: the replay buffer is empty")
    capacity, (rows, cursor) = stored.shape[0], _compat.saved_rows_and_cursor(buffer_state)
    stored = stored[:rows]
    if rows == capacity and cursor:  # a full ring buffer: the oldest row is at the writer's cursor
        stored = torch.cat([stored[cursor:], stored[:cursor]])
    columns = [stored[:, c] for c in range(stored.shape[1])]  # one env per column
    return spec, torch.cat([_transitions(col) for col in columns])


def _transitions(column: TensorDictBase) -> TensorDictBase:
    """One env's rows in the dataset layout, ``episode`` numbering its trajectories from 0."""
    traj = column.get(TRAJ_KEY).reshape(-1)
    new_episode = torch.ones_like(traj, dtype=torch.bool)
    new_episode[1:] = traj[1:] != traj[:-1]
    return TensorDict(
        {
            "observation": column["observation"].reshape(len(traj), -1),
            "action": column["action"].reshape(len(traj), -1),
            "episode": new_episode.long().cumsum(0) - 1,
            "next": {
                "observation": column["next", "observation"].reshape(len(traj), -1),
                "reward": column["next", "reward"].reshape(len(traj), 1),
                "terminated": column["next", "terminated"].reshape(len(traj), 1),
            },
        },
        [len(traj)],
    )


def _pad(data: TensorDictBase, tasks: TaskSet) -> TensorDictBase:
    for key in ("observation", ("next", "observation")):
        data.set(key, tasks.pad_observation(data.get(key)))
    data.set("action", tasks.pad_action(data["action"]))
    return data


def export_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """One dataset from the replay buffers of finished (or interrupted) runs; runs of the same task share its id."""
    specs: dict[str, TaskSpec] = {}
    parts: list[tuple[str, TensorDictBase]] = []
    for run_dir in run_dirs:
        spec, data = _run_transitions(Path(run_dir))
        if specs.setdefault(spec.name, spec) != spec:
            raise ConfigError(f"{run_dir}: task {spec.name} has sizes {spec} here and {specs[spec.name]} elsewhere")
        parts.append((spec.name, data))
    tasks = TaskSet(tuple(specs.values()))
    episodes = 0
    for name, data in parts:
        data.set("task", torch.full((len(data),), tasks.index(name), dtype=torch.long))
        data.set("episode", data["episode"] + episodes)
        episodes = int(data["episode"].max()) + 1
        _pad(data, tasks)
    return write_dataset(out, tasks.tasks, torch.cat([d for _, d in parts]))


# ---------------------------------------------------------------- the official files


def from_official_episodes(td: TensorDictBase, first_episode: int = 0) -> TensorDictBase:
    """Official episodes ``[E, T + 1]`` (row t: obs_t, the action and reward that led to it) → ``[E·T]``
    transitions of this module's layout."""
    E, T1 = td.shape
    obs, action, reward, task = td["obs"], td["action"], td["reward"], td["task"]
    terminated = td["terminated"] if "terminated" in td.keys() else torch.zeros(E, T1, dtype=torch.bool)
    episode = torch.arange(first_episode, first_episode + E).unsqueeze(1).expand(E, T1 - 1)
    n = E * (T1 - 1)
    return TensorDict(
        {
            "observation": obs[:, :-1].reshape(n, -1),
            "action": action[:, 1:].reshape(n, -1).float(),
            "task": task[:, 1:].reshape(n).long(),
            "episode": episode.reshape(n),
            "next": {
                "observation": obs[:, 1:].reshape(n, -1),
                "reward": reward[:, 1:].reshape(n, 1).float(),
                "terminated": terminated[:, 1:].reshape(n, 1).bool(),
            },
        },
        [n],
    )


def import_official(files: Sequence[str | Path], task_set: str, out: str | Path) -> Path:
    """Convert the official ``mt30``/``mt80`` ``*.pt`` files into a dataset directory."""
    tasks = official_task_set(task_set)
    parts, episodes = [], 0
    for f in files:
        td = torch.load(f, weights_only=False)  # the official files pickle whole TensorDicts
        if td.batch_dims != 2 or "obs" not in td.keys():
            raise ConfigError(f"{f}: not an official episode file (a TensorDict [episodes, T+1] with obs/action/...)")
        part = from_official_episodes(td, episodes)
        episodes += td.shape[0]
        if part["observation"].shape[-1] != tasks.obs_dim or part["action"].shape[-1] != tasks.action_dim:
            raise ConfigError(
                f"{f}: obs/action sizes {part['observation'].shape[-1]}/{part['action'].shape[-1]} "
                f"are not {task_set}'s {tasks.obs_dim}/{tasks.action_dim}"
            )
        parts.append(part)
    return write_dataset(out, tasks.tasks, torch.cat(parts))


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tdmpc2_trl.data.offline_dataset", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="a dataset from runs' replay buffers (newest checkpoint of each)")
    export.add_argument("runs", nargs="+", help="run directories (or checkpoint files)")
    export.add_argument("--out", required=True)
    official = sub.add_parser("import-official", help="convert the official mt30/mt80 *.pt files")
    official.add_argument("files", nargs="+", help="*.pt files, or a directory holding them")
    official.add_argument("--tasks", required=True, choices=["mt30", "mt80"])
    official.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            out = export_runs(args.runs, args.out)
        else:
            files = [p for f in map(Path, args.files) for p in (sorted(f.glob("*.pt")) if f.is_dir() else [f])]
            if not files:
                raise ConfigError(f"no *.pt files in {args.files}")
            out = import_official(files, args.tasks, args.out)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tasks, data = load_dataset(out)
    print(f"wrote {out}: {len(data):,} transitions, {int(data['episode'].max()) + 1:,} episodes, tasks {tasks.names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
