"""Checkpoints: atomic writes, discovery of the latest good one, clear errors on unreadable files."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:09d}.pt"


def save_checkpoint(path: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename) and keep only the newest ``keep`` files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """``step_*.pt`` files of a checkpoint directory, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint file; raise ``ConfigError`` with a one-line reason if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or corrupt file: torch raises several exception types
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "world_model" not in state:
        raise ConfigError(f"{path} is not a tdmpc2-trl checkpoint")
    return state


def resolve_checkpoint(path_or_run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file as given, or the newest readable checkpoint of a run directory."""
    path = Path(path_or_run_dir)
    if path.is_file():
        return path, load_checkpoint(path)
    candidates = list_checkpoints(path / "checkpoints") if path.is_dir() else []
    if not candidates:
        raise ConfigError(f"no checkpoint found at {path} (expected a .pt file or a run directory with checkpoints/)")
    errors = []
    for candidate in reversed(candidates):
        try:
            return candidate, load_checkpoint(candidate)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(f"no readable checkpoint in {path}: {'; '.join(errors)}")


def training_state(*, step: int, burst_done: bool, config: dict[str, Any], task: dict[str, Any], world_model,
                   loss, updater, buffer) -> dict[str, Any]:
    """Everything a resumed run needs: networks, target Q and RunningScale (``loss``), both Adam states
    (``updater``), the replay buffer, the torch/numpy/python RNG states, the step counter and the burst flag.

    Not included: the env's episode in flight (gymnasium/dm_control envs have no generic state API), so a resumed
    run starts a fresh episode; its partial trajectory stays in the buffer and ends there.
    """
    return {
        "step": step, "burst_done": burst_done, "config": config, "task": task,
        "world_model": world_model.state_dict(), "loss": loss.state_dict(), "updater": updater.state_dict(),
        "replay_buffer": buffer.state_dict(), "rng": rng_state(),
    }


def restore_training_state(state: dict[str, Any], *, world_model, loss, updater, buffer) -> tuple[int, bool]:
    """Load a ``training_state`` into freshly built objects (updater built first); returns ``(step, burst_done)``."""
    world_model.load_state_dict(state["world_model"])
    loss.load_state_dict(state["loss"])
    updater.load_state_dict(state["updater"])
    buffer.load_state_dict(state["replay_buffer"])
    set_rng_state(state["rng"])
    return int(state["step"]), bool(state["burst_done"])


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
