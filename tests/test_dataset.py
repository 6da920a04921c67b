"""Offline datasets: export from run checkpoints, the official episode layout, sampling slices for the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.data.offline_dataset import (
    check_tasks,
    export_runs,
    from_official_episodes,
    load_dataset,
    main,
    make_offline_buffer,
    write_dataset,
)
from tdmpc2_trl.data.replay_buffer import MASK_KEY, add, make_replay_buffer
from tdmpc2_trl.networks.tasks import TaskSpec
from tdmpc2_trl.platform.checkpoint import checkpoint_path, save_checkpoint


def fake_run(
    run_dir: Path,
    task: str,
    obs_dim: int,
    action_dim: int,
    episodes: list[int],
    capacity: int = 1000,
    value: float = 0.0,
) -> None:
    """A run directory whose checkpoint holds a replay buffer of one env's episodes of the given lengths; every
    observation's first entry counts the steps (value + step index), to check order."""
    rb = make_replay_buffer(capacity=capacity, batch_size=2, horizon=3)
    step = 0
    for traj, length in enumerate(episodes):
        for t in range(length):
            obs = torch.full((1, obs_dim), value + step)
            td = TensorDict(
                {
                    "observation": obs,
                    "action": torch.full((1, action_dim), 0.5),
                    "collector": {"traj_ids": torch.tensor([traj])},
                    "next": {
                        "observation": obs + 1,
                        "reward": torch.ones(1, 1),
                        "terminated": torch.tensor([[t == length - 1]]),
                    },
                },
                [1],
            )
            add(rb, td)
            step += 1
    info = {
        "name": task,
        "family": "gym",
        "episode_length": 50,
        "episodic": True,
        "obs_dim": obs_dim,
        "action_dim": action_dim,
        "action_repeat": 1,
        "obs": "state",
    }
    save_checkpoint(checkpoint_path(run_dir, step), {"world_model": {}, "task": info, "replay_buffer": rb.state_dict()})


def test_export_pads_numbers_episodes_and_keeps_time_order(tmp_path):
    fake_run(tmp_path / "a1", "A", 3, 1, [5, 4])
    fake_run(tmp_path / "b", "B", 5, 2, [6], value=100)
    fake_run(tmp_path / "a2", "A", 3, 1, [3], value=200)
    assert (
        main(["export", str(tmp_path / "a1"), str(tmp_path / "b"), str(tmp_path / "a2"), "--out", str(tmp_path / "ds")])
        == 0
    )
    tasks, data = load_dataset(tmp_path / "ds")
    assert tasks.names == ["A", "B"] and (tasks.obs_dim, tasks.action_dim) == (5, 2)
    assert len(data) == 5 + 4 + 6 + 3
    assert data["episode"].tolist() == [0] * 5 + [1] * 4 + [2] * 6 + [3] * 3
    assert data["task"].tolist() == [0] * 9 + [1] * 6 + [0] * 3
    assert data["observation"][:9, 0].tolist() == list(range(9))
    assert torch.equal(data["observation"][:9, 3:], torch.zeros(9, 2))  # A's 3 values, then padding
    assert torch.equal(data["action"][:9], torch.tensor([[0.5, 0.0]]).expand(9, 2))
    assert data["next", "terminated"][:, 0].nonzero().flatten().tolist() == [4, 8, 14, 17]
    check_tasks(tasks, ["A", "B"])
    with pytest.raises(ConfigError, match="differ from the dataset"):
        check_tasks(tasks, ["B", "A"])


def test_export_unrolls_a_full_ring_buffer(tmp_path):
    fake_run(tmp_path / "r", "A", 2, 1, [4, 4, 4], capacity=10)  # 12 steps into 10 rows: the first 2 are gone
    export_runs([tmp_path / "r"], tmp_path / "ds")
    _, data = load_dataset(tmp_path / "ds")
    assert data["observation"][:, 0].tolist() == list(range(2, 12))
    assert data["episode"].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_slices_stay_inside_one_episode(tmp_path):
    fake_run(tmp_path / "r", "A", 2, 1, [5, 7, 6])
    export_runs([tmp_path / "r"], tmp_path / "ds")
    _, data = load_dataset(tmp_path / "ds")
    rb = make_offline_buffer(data, batch_size=64, horizon=3)
    batch = rb.sample().reshape(-1, 3)
    assert batch.shape == (64, 3)
    assert (batch["episode"] == batch["episode"][:, :1]).all()
    assert torch.equal(batch["observation"][:, 1:, 0], batch["observation"][:, :-1, 0] + 1)  # consecutive steps


def test_episode_end_slices_over_a_dataset_start_everywhere_and_mask_past_the_end(tmp_path):
    fake_run(tmp_path / "r", "A", 2, 1, [5, 7, 6])
    export_runs([tmp_path / "r"], tmp_path / "ds")
    _, data = load_dataset(tmp_path / "ds")
    batch = make_offline_buffer(data, batch_size=3000, horizon=3, episode_end_slices=True).sample().reshape(-1, 3)
    episode, obs, mask = batch["episode"], batch["observation"][..., 0], batch[MASK_KEY]
    assert (episode == episode[:, :1]).all()
    assert set(obs[:, 0].tolist()) == set(data["observation"][:, 0].tolist())  # every transition starts a slice
    last = torch.tensor([data["observation"][data["episode"] == e, 0].max() for e in range(3)])[episode[:, 0]]
    expected = obs[:, :1] + torch.arange(3) <= last[:, None]  # real up to the episode's last transition
    assert torch.equal(mask, expected)
    assert torch.equal(obs, torch.minimum(obs[:, :1] + torch.arange(3), last[:, None]))  # padding repeats the last


def test_official_episode_layout_is_shifted_by_one_step():
    E, T = 2, 4
    obs = torch.arange(E * (T + 1), dtype=torch.float32).view(E, T + 1, 1).expand(E, T + 1, 3)
    action = torch.arange(E * (T + 1), dtype=torch.float32).view(E, T + 1, 1).expand(E, T + 1, 2).clone()
    action[:, 0] = float("nan")
    reward = action[..., 0].clone()
    td = TensorDict({"obs": obs, "action": action, "reward": reward, "task": torch.full((E, T + 1), 7)}, [E, T + 1])
    out = from_official_episodes(td, first_episode=10)
    assert len(out) == E * T
    assert out["observation"][:, 0].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    assert out["next", "observation"][:, 0].tolist() == [1, 2, 3, 4, 6, 7, 8, 9]
    assert out["action"][:, 0].tolist() == [1, 2, 3, 4, 6, 7, 8, 9]  # a_t leads from obs_t to obs_t+1
    assert not out["action"].isnan().any() and not out["next", "reward"].isnan().any()
    assert out["episode"].tolist() == [10] * 4 + [11] * 4 and out["task"].tolist() == [7] * 8


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "ds")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ConfigError, match="not a dataset directory"):
        load_dataset(tmp_path)
    write_dataset(tmp_path / "ds2", [TaskSpec("A", 1, 1, 10)], TensorDict({"x": torch.zeros(2)}, [2]))
    with pytest.raises(ConfigError, match="already holds a dataset"):
        write_dataset(tmp_path / "ds2", [TaskSpec("A", 1, 1, 10)], TensorDict({"x": torch.zeros(2)}, [2]))
