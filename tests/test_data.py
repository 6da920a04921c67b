"""Replay buffer: [B, H] slices from batched-env collection never cross trajectories, and checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import StepCounter

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, next_traj_offset, sample_batch
from tdmpc2_trl.envs.factory import make_env

EPISODE = 9  # short episodes: many trajectory boundaries in a small buffer


def collect(rb, frames: int, frames_per_batch: int = 2, offset: int = 0, seed: int = 0) -> None:
    """Fill ``rb`` from a random-policy Collector over 2 Pendulum envs cut to ``EPISODE``-step episodes."""
    cut = StepCounter(max_steps=EPISODE, step_count_key="episode_step")
    env = make_env("Pendulum-v1", seed=seed, num_envs=2, transforms=[cut])
    collector = Collector(env, None, frames_per_batch=frames_per_batch, total_frames=frames)
    for data in collector:
        assert data.shape == (2, frames_per_batch // 2)
        add(rb, data, offset)
    collector.shutdown()  # closes the env too


def check_slices(batch: TensorDict, batch_size: int, horizon: int) -> None:
    assert batch.shape == (batch_size, horizon)
    traj = batch["collector", "traj_ids"]
    assert (traj == traj[:, :1]).all()  # one trajectory per slice
    for key in ("step_count", "episode_step"):
        steps = batch[key].squeeze(-1)
        assert (steps[:, 1:] - steps[:, :-1] == 1).all()  # consecutive steps
    assert (batch["episode_step"] < EPISODE).all()
    torch.testing.assert_close(batch["next", "observation"][:, :-1], batch["observation"][:, 1:])
    assert batch["action"].abs().max() <= 1.0
    for key in [("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done")]:
        assert key in batch.keys(True)


@pytest.mark.parametrize("frames_per_batch", [2, 10])  # [2, 1] batches (one step per env, as the recipe) and [2, 5]
def test_slices_from_a_two_env_collector_stay_in_one_trajectory(frames_per_batch):
    rb = make_replay_buffer(capacity=1000, batch_size=64, horizon=4)
    collect(rb, 200, frames_per_batch)
    assert len(rb) == 200 and rb.num_envs == 2
    assert next_traj_offset(rb) == 2 * -(-100 // EPISODE)  # 12 episodes per env, the last one open
    seen = set()
    for _ in range(5):
        batch = sample_batch(rb)
        check_slices(batch, 64, 4)
        seen.update(batch["collector", "traj_ids"][:, 0].tolist())
    assert len(seen) > 12  # slices come from both envs' trajectories
    # the truncation at a slice's end is the env's own flag, never the sampler's
    stored = rb.storage[:]
    assert int(batch["next", "truncated"].sum()) <= int(stored["next", "truncated"].sum())


def test_ring_buffer_wraps_without_crossing_the_write_cursor():
    rb = make_replay_buffer(capacity=40, batch_size=32, horizon=3)  # 20 rows x 2 envs, overwritten 5 times
    collect(rb, 200)
    assert len(rb) == 40
    newest = next_traj_offset(rb) - 1
    for _ in range(5):
        check_slices(sample_batch(rb), 32, 3)
    collect(rb, 10, offset=newest + 1, seed=1)  # new writes invalidate the cached trajectory boundaries
    batches = [sample_batch(rb) for _ in range(5)]
    for batch in batches:
        check_slices(batch, 32, 3)
    assert max(b["collector", "traj_ids"].max().item() for b in batches) > newest


def single_trajectory(t0: int, length: int) -> TensorDict:
    t = torch.arange(t0, t0 + length)
    return TensorDict(
        {
            "collector": {"traj_ids": torch.zeros_like(t)},
            "step_count": t.unsqueeze(-1),
            "planner_mean": torch.zeros(length, 3, 1),
        },
        [length],
    )


def test_one_env_rollouts_and_key_filtering():
    rb = make_replay_buffer(capacity=10, batch_size=16, horizon=3)
    for t in range(25):  # one trajectory longer than the buffer, written one [1]-step rollout at a time
        add(rb, single_trajectory(t, 1))
    assert rb.num_envs == 1 and len(rb) == 10
    batch = sample_batch(rb)
    assert "planner_mean" not in batch.keys()
    assert (batch["step_count"].squeeze(-1).diff(dim=1) == 1).all()  # never across the overwrite point
    with pytest.raises(ConfigError, match="num_envs"):
        rb.extend(single_trajectory(25, 2).unsqueeze(0).expand(2, 2).clone())


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_state_dict_round_trip(tmp_path, storage):
    rb = make_replay_buffer(capacity=60, batch_size=16, horizon=3, storage=storage, scratch_dir=tmp_path / "a")
    collect(rb, 80)  # full and wrapped
    path = tmp_path / "buffer.pt"
    torch.save(rb.state_dict(), path)  # what the recipe's checkpoint does
    rb2 = make_replay_buffer(capacity=60, batch_size=16, horizon=3, storage=storage, scratch_dir=tmp_path / "b")
    rb2.load_state_dict(torch.load(path, weights_only=False))
    assert len(rb2) == len(rb) == 60
    assert (rb2.storage[:] == rb.storage[:]).all()
    if storage == "memmap":
        assert (tmp_path / "a" / "observation.memmap").exists()  # memory maps live in the scratch dirs
        assert (tmp_path / "b" / "observation.memmap").exists()
    for _ in range(3):
        check_slices(sample_batch(rb2), 16, 3)
    # a resumed run's collector restarts its ids at 0: the offset keeps them distinct from the stored ones
    offset = next_traj_offset(rb2)
    collect(rb2, 20, offset=offset, seed=1)
    assert next_traj_offset(rb2) > offset
    check_slices(sample_batch(rb2), 16, 3)
    # the writer continues where the saved one stopped: the 10 oldest rows were overwritten
    assert (rb2.storage[:]["collector", "traj_ids"] >= offset).sum() == 20


@pytest.mark.parametrize("method", ["state_dict", "dumps"])
def test_round_trip_keeps_the_overwrite_point(tmp_path, method):
    rb = make_replay_buffer(capacity=10, batch_size=16, horizon=3, storage="memmap", scratch_dir=tmp_path / "a")
    for t in range(25):  # one trajectory longer than the buffer: only the write cursor separates old from new
        add(rb, single_trajectory(t, 1))
    rb2 = make_replay_buffer(capacity=10, batch_size=16, horizon=3, storage="memmap", scratch_dir=tmp_path / "b")
    if method == "dumps":
        rb.dumps(tmp_path / "dump")
        rb2.loads(tmp_path / "dump")
    else:
        rb2.load_state_dict(rb.state_dict())
    assert (rb2.storage[:] == rb.storage[:]).all()
    for _ in range(3):
        assert (sample_batch(rb2)["step_count"].squeeze(-1).diff(dim=1) == 1).all()


def test_bad_buffer_settings_raise_config_error():
    with pytest.raises(ConfigError, match="storage"):
        make_replay_buffer(capacity=100, batch_size=4, horizon=3, storage="disk")
    with pytest.raises(ConfigError, match="capacity"):
        make_replay_buffer(capacity=2, batch_size=4, horizon=3)


def stored_trajectories(lengths: list[int], num_envs: int = 2) -> TensorDict:
    """``[num_envs, T]`` rows: env ``e`` holds trajectories of ``lengths`` (ids unique over envs), ``i`` = (env, t)."""
    envs = []
    for e in range(num_envs):
        traj = torch.cat([torch.full((n,), 100 * e + k) for k, n in enumerate(lengths)])
        envs.append(TensorDict({("collector", "traj_ids"): traj, "i": 1000 * e + torch.arange(len(traj))}, [len(traj)]))
    return torch.stack(envs)


@pytest.mark.parametrize("episode_end_slices", [False, True])
def test_episode_end_slices_start_at_every_step_and_mask_past_the_end(episode_end_slices):
    lengths, horizon = [5, 4, 6, 2], 3
    rb = make_replay_buffer(capacity=200, batch_size=2000, horizon=horizon, episode_end_slices=episode_end_slices)
    add(rb, stored_trajectories(lengths))
    torch.manual_seed(0)
    batch = sample_batch(rb)
    i, traj = batch["i"], batch["collector", "traj_ids"]
    ends = {}  # (env, trajectory) -> its last index
    for e in range(2):
        t0 = 0
        for k, n in enumerate(lengths):
            ends[100 * e + k] = 1000 * e + t0 + n - 1
            t0 += n
    if not episode_end_slices:  # TD-MPC2's sampling: never within horizon - 1 of a trajectory's end
        assert ("collector", "mask") not in batch.keys(True)
        assert all(start <= ends[int(k)] - (horizon - 1) for start, k in zip(i[:, 0].tolist(), traj[:, 0].tolist()))
        return
    mask = batch["collector", "mask"]
    assert mask.shape == (2000, horizon) and mask[:, 0].all()
    assert (traj == traj[:, :1]).all()  # padded steps repeat the last real one, of the same trajectory
    real_steps = mask.sum(-1)
    for start, k, n_real, row in zip(i[:, 0].tolist(), traj[:, 0].tolist(), real_steps.tolist(), i.tolist()):
        assert n_real == min(horizon, ends[k] - start + 1)
        assert row == [min(start + t, ends[k]) for t in range(horizon)]
    every = {j for e in range(2) for j in range(1000 * e, 1000 * e + sum(lengths))}
    assert set(i[:, 0].tolist()) == every  # every transition starts some slice, the last of each trajectory too


def test_episode_end_slices_wrap_without_crossing_the_write_cursor():
    rb = make_replay_buffer(capacity=40, batch_size=300, horizon=3, episode_end_slices=True)
    collect(rb, 200)  # 20 rows x 2 envs, overwritten 5 times; the write cursor cuts the oldest trajectory
    for _ in range(5):
        batch = sample_batch(rb)
        mask, traj = batch["collector", "mask"], batch["collector", "traj_ids"]
        assert (traj == traj[:, :1]).all()
        steps = batch["step_count"].squeeze(-1)
        gaps = steps[:, 1:] - steps[:, :-1]
        assert (gaps[mask[:, 1:]] == 1).all() and (gaps[~mask[:, 1:]] == 0).all()  # real steps run on, pads repeat
        assert not mask.all()  # some slices start in a trajectory's last steps
