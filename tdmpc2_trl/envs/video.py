"""Videos of evaluation episodes: a TorchRL transform that renders the first env, and an mp4 writer (PyAV).

    recorder = EpisodeRecorder(size=256)
    eval_env = make_env(task, num_envs=5, transforms=[recorder], render=True)
    recorder.start(); evaluate(eval_env, planner, max_steps)
    write_video(run_dir / "videos" / "eval_step_000010000.mp4", recorder.frames)

The recorder renders the first env of the (batched) env itself, after the reset and after every step of its first
episode (``T + 1`` frames for ``T`` steps), so state-based and pixel-based envs record alike and the other envs
never render. DMControl envs render the task camera (camera 2 for quadruped) at ``size``²; gymnasium envs need
``render=True`` in ``make_env`` and give frames at their own size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, Transform
from torchrl.envs.batched_envs import BatchedEnvBase

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.render import RenderableDMControlEnv, rendering_error
from tdmpc2_trl.platform.checkpoint import named_os_error
from tdmpc2_trl.platform.extras import require

__all__ = ["VIDEO_FPS", "EpisodeRecorder", "read_video", "video_path", "write_video"]

VIDEO_FPS = 30


def video_path(run_dir: str | Path, step: int, prefix: str = "eval") -> Path:
    """``<run_dir>/videos/<prefix>_step_XXXXXXXXX.mp4``."""
    return Path(run_dir) / "videos" / f"{prefix}_step_{step:09d}.mp4"


def _first_raw_env(env: EnvBase) -> EnvBase:
    """The innermost env of the first copy: through ``TransformedEnv`` layers and ``SerialEnv``/``ParallelEnv``."""
    while True:
        if isinstance(env, BatchedEnvBase):
            if _compat.batched_env_copies(env) is None:
                raise ConfigError("video recording needs a serial batched env (the first copy renders in-process)")
            env = _compat.batched_env_copies(env)[0]
        elif hasattr(env, "base_env"):
            env = env.base_env
        else:
            return env


def frame_source(env: EnvBase, size: int) -> Callable[[], np.ndarray]:
    """A function returning the current RGB frame ``[H, W, 3]`` uint8 of ``env``'s first copy."""
    raw = _first_raw_env(env)
    if isinstance(raw, RenderableDMControlEnv):
        return lambda: raw.render(height=size, width=size).numpy()
    gym_env = _compat.wrapped_env(raw)
    if getattr(gym_env, "render_mode", None) != "rgb_array":
        raise ConfigError(f"cannot record videos of {type(raw).__name__}: build the env with make_env(render=True)")

    def render() -> np.ndarray:
        try:
            return np.ascontiguousarray(gym_env.render())
        except Exception as err:  # gymnasium's DependencyNotInstalled (pygame), GL errors
            raise rendering_error(err) from err

    return render


class EpisodeRecorder(Transform):
    """Records the first env's next episode once ``start()`` is called: one frame after the reset and one after
    each step, until that env's first ``done``. Frames land in ``frames`` (a list of ``[H, W, 3]`` uint8 arrays).

    Add it to the env's transforms (it changes no key and no spec); it renders nothing while not recording.
    """

    def __init__(self, size: int = 256) -> None:
        require("av", "video", "recording evaluation videos")  # at start-up, not at the first evaluation
        super().__init__(in_keys=[], out_keys=[])
        self.size = int(size)
        self.frames: list[np.ndarray] = []
        self._state = "idle"  # idle -> armed (start) -> recording (reset) -> idle (done)
        self._render: Callable[[], np.ndarray] | None = None

    def start(self) -> None:
        """Record the episode that starts at the env's next reset."""
        self.frames, self._state = [], "armed"

    def stop(self) -> None:
        """Stop recording (the frames so far stay in ``frames``)."""
        self._state = "idle"

    def _capture(self) -> None:
        if self._render is None:
            self._render = frame_source(self.parent, self.size)
        self.frames.append(self._render())

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        if self._state == "armed" and _first(tensordict, "_reset", default=True):
            self._state = "recording"
            self._capture()
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        if self._state == "recording":
            self._capture()
            if _first(next_tensordict, "done", default=False):
                self._state = "idle"
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict


def _first(td: TensorDictBase | None, key: str, default: bool) -> bool:
    """``td[key]`` of the first env as a bool (``default`` when absent)."""
    value = None if td is None else td.get(key, None)
    return default if value is None else bool(value.reshape(-1)[0])


def write_video(path: str | Path, frames: Sequence[np.ndarray | torch.Tensor], fps: int = VIDEO_FPS) -> Path:
    """Write RGB frames ``[H, W, 3]`` uint8 to an H.264 mp4 (yuv420p, plays in browsers and wandb), atomically.

    A failed write (full disk, directory gone) raises an ``OSError`` naming ``path`` and leaves no partial file.
    """
    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _encode(tmp, frames, fps)
        tmp.replace(path)
    except BaseException as err:  # a signal too: the partial file goes either way
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise named_os_error(err, path) from None
        raise
    return path


def _encode(path: Path, frames: Sequence[np.ndarray | torch.Tensor], fps: int) -> None:
    """Encode ``frames`` into the mp4 file ``path`` (H.264 where PyAV has it, else MPEG-4 part 2)."""
    import av

    h, w = np.asarray(frames[0]).shape[:2]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w + w % 2, h + h % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            array = np.asarray(frame, dtype=np.uint8)
            if (h % 2, w % 2) != (0, 0):
                array = np.pad(array, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def read_video(path: str | Path) -> np.ndarray:
    """Decode an mp4 to ``[T, H, W, 3]`` uint8 (for tests and quick looks)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
