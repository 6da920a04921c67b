"""Evaluation videos: the mp4 writer, the first-env recorder, and save_video=true in train.py and eval.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_recipes import run, train
from torchrl.envs import StepCounter

from tdmpc2_trl.envs.factory import _single_env, make_env
from tdmpc2_trl.envs.video import EpisodeRecorder, read_video, video_path, write_video
from tdmpc2_trl.run.evaluate import evaluate


def gradient_frames(t: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth moving gradients (lossy H.264 keeps them within a few grey levels)."""
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack([(x * 4 + 8 * i) % 256, (y * 4) % 256, np.full_like(x, 40 * i % 256)], -1).astype(np.uint8)
        for i in range(t)
    ]


def test_write_then_read_keeps_frame_count_size_and_content(tmp_path):
    frames = gradient_frames(7, 48, 64)
    path = write_video(video_path(tmp_path, 1234), frames)
    assert path == tmp_path / "videos" / "eval_step_000001234.mp4"
    video = read_video(path)
    assert video.shape == (7, 48, 64, 3) and video.dtype == np.uint8
    assert np.abs(video.astype(int) - np.stack(frames)).mean() < 8
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically: no temp file left
    assert read_video(write_video(tmp_path / "odd.mp4", gradient_frames(3, 31, 33))).shape == (3, 32, 34, 3)
    with pytest.raises(ValueError):
        write_video(tmp_path / "empty.mp4", [])


def test_recorder_renders_only_the_first_env_of_one_episode():
    recorder = EpisodeRecorder(size=48)
    env = make_env("cartpole-swingup", seed=0, num_envs=2, transforms=[recorder])  # state observations
    returns = evaluate(env, None, max_steps=10, recorder=recorder)
    assert len(returns) == 2
    assert len(recorder.frames) == 11  # the reset and each of the 10 steps
    assert recorder.frames[0].shape == (48, 48, 3) and recorder.frames[0].dtype == np.uint8
    assert not np.array_equal(recorder.frames[0], recorder.frames[-1])  # the cart moved
    env.rollout(3)  # not recording outside evaluate
    assert len(recorder.frames) == 11
    evaluate(env, None, max_steps=4, recorder=recorder)  # each evaluation records afresh
    assert len(recorder.frames) == 5
    env.close()


def test_recorder_stops_at_the_end_of_the_first_episode():
    recorder = EpisodeRecorder(size=32)
    env = _single_env("cartpole-swingup", seed=0)
    env.append_transform(StepCounter(max_steps=4))  # 4-step episodes
    env.append_transform(recorder)
    recorder.start()
    rollout = env.rollout(10, break_when_any_done=False)
    assert rollout["next", "done"].sum() == 2  # two episodes ended (auto-reset between them)
    assert len(recorder.frames) == 5  # the first episode only: its reset and its 4 steps
    env.close()


@pytest.mark.slow
def test_train_and_eval_write_videos_of_a_state_based_run(tmp_path):
    run_dir = train(
        tmp_path,
        "task=cartpole-swingup",
        "steps=120",
        "collector.seed_steps=100",
        "eval.freq=0",
        "eval.episodes=2",
        "checkpoint_freq=0",
        "eval.save_video=true",
        "eval.video_size=64",
    )
    video = read_video(run_dir / "videos" / "eval_step_000000120.mp4")
    assert video.shape == (501, 64, 64, 3)  # the reset + 500 decisions of the first eval env
    assert video.std() > 0
    proc = run("eval.py", f"checkpoint={run_dir}", "episodes=1", "save_video=true", "video_size=48")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["video"] == str(run_dir / "videos" / "checkpoint_step_000000120.mp4")
    assert read_video(result["video"]).shape == (501, 48, 48, 3)
    assert torch.load(run_dir / "checkpoints" / "step_000000120.pt", weights_only=False)["config"]["eval"]["save_video"]
