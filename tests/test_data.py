"""Replay buffer: slices from interleaved multi-env collection never cross trajectories."""
import torch
from torchrl.collectors import Collector

from tdmpc2_trl.data import add, make_replay_buffer, next_traj_offset, sample_batch
from tdmpc2_trl.envs import make_env


def fill(rb, steps=600, offset=0):
    env = make_env("Pendulum-v1", seed=0, num_envs=2)
    collector = Collector(env, None, frames_per_batch=2, total_frames=steps)  # random policy, [2, 1] batches
    for data in collector:
        add(rb, data, offset)
    collector.shutdown()


def check_slices(batch, horizon):
    assert batch.shape[1] == horizon
    traj = batch["collector", "traj_ids"]
    assert (traj == traj[:, :1]).all()  # one trajectory per slice
    steps = batch["step_count"].squeeze(-1)
    assert (steps[:, 1:] - steps[:, :-1] == 1).all()  # consecutive steps
    torch.testing.assert_close(batch["next", "observation"][:, :-1], batch["observation"][:, 1:])


def test_slices_from_two_interleaved_envs(tmp_path):
    rb = make_replay_buffer(capacity=1000, batch_size=64, horizon=4)
    fill(rb)
    assert len(rb) == 600 and next_traj_offset(rb) == 4  # 2 envs x (one 200-step episode + one open one)
    for _ in range(5):
        batch = sample_batch(rb)
        assert batch.shape == (64, 4)
        check_slices(batch, 4)
        assert "planner_mean" not in batch.keys()


def test_state_dict_round_trip_and_offset_keeps_ids_unique(tmp_path):
    rb = make_replay_buffer(capacity=2000, batch_size=16, horizon=3, storage="memmap", scratch_dir=tmp_path)
    fill(rb, 400)
    rb2 = make_replay_buffer(capacity=2000, batch_size=16, horizon=3, storage="memmap", scratch_dir=tmp_path / "b")
    rb2.load_state_dict(rb.state_dict())
    assert len(rb2) == 400
    torch.testing.assert_close(rb2.storage[:400]["observation"], rb.storage[:400]["observation"])
    # a resumed run's collector restarts ids at 0: the offset keeps them unique and sampling valid
    fill(rb2, 400, offset=next_traj_offset(rb2))
    assert len(rb2) == 800 and next_traj_offset(rb2) == 4  # ids 0-1, then 2-3 after the offset
    check_slices(sample_batch(rb2), 3)
