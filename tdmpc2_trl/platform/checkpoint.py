"""Checkpoints: atomic writes, discovery of the latest good one, clear errors on unreadable or unsafe files.

A checkpoint holds only tensors, numbers, strings, lists, tuples and dicts, and is read with
``torch.load(weights_only=True)``: a file that needs any other type (a pickled callable, a numpy array) is refused
with one line naming the type, so a checkpoint from elsewhere cannot run code when it is resumed or evaluated.

Why this is not ``torchrl.checkpoint`` (read in torchrl 0.14.1, ``torchrl/checkpoint/_checkpoint.py``): each of its
parts misses a guarantee that ``tests/test_faults.py`` or ``tests/test_resume.py`` checks.

- Writes: ``Checkpoint.save`` stages a directory and renames it, but never calls ``fsync``, so after a power loss
  the renamed checkpoint can hold empty files; its default payload (tensordict memory maps) ends the process with
  SIGBUS on a full disk (exit 135, no error line); its ``torch`` payload raises ``RuntimeError("... unexpected
  pos ...")`` instead of the ``OSError`` naming the file; a killed save leaves ``.<name>.stage-<uuid>/`` (a whole
  checkpoint's size) that no later save or ``CheckpointRotation.prune`` removes.
- Rotation and discovery: ``CheckpointRotation.latest`` checks only that the manifest parses, so a checkpoint with a
  truncated payload is still "latest" and its load fails; unreadable ones are skipped without a word on stderr.
- Safe loading: a refused unpickling surfaces as ``CheckpointError("Failed to load checkpoint component ...")`` with
  torch's multi-line message, not one line naming the offending types.
- RNG: ``GlobalRNGState.load_state_dict`` raises when the file holds CUDA states and the machine has no GPU, so a
  GPU run could not be resumed on a CPU (``set_rng_state`` below restores the devices this machine has).
- Loading selected parts: ``Checkpoint.load(components=...)`` reads only the chosen directories; one file read with
  ``torch.load(mmap=True)`` gives the same (``networks_only``: the replay buffer is mapped, never read).
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from tdmpc2_trl.config.schema import ConfigError

_NAME = re.compile(r"^step_(\d+)\.pt$")
_STALE = re.compile(r"^step_\d+\.pt\.tmp$")


class UnsafeCheckpointError(ConfigError):
    """The file needs types beyond tensors, numbers, strings, lists and dicts: loading it could run code."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:09d}.pt"


def named_os_error(err: OSError, path: str | Path) -> OSError:
    """``err`` as an ``OSError`` that names ``path`` (the file the user knows, not a temporary one)."""
    return OSError(err.errno, err.strerror or str(err), str(path))


def os_error_line(err: OSError) -> str:
    """The one line a recipe prints for a failed write: the file (when the error names one) and the cause."""
    where = f"cannot write {err.filename}: " if err.filename else ""  # ConnectionError etc. name no file
    return f"error: {where}{err.strerror or err}"


@contextmanager
def atomic_file(path: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """A temporary file beside ``path`` that replaces it (after fsync) when the block succeeds. On any failure,
    a signal included, the temporary file is removed; an ``OSError`` is re-raised naming ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise named_os_error(err, path) from None
        raise


class _WriteRecorder:
    """File wrapper for ``torch.save`` that keeps the ``OSError`` of a failed write: torch reports some of
    them (e.g. a full disk) as a ``RuntimeError`` about the zip writer's position."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def _torch_save(state: Mapping[str, Any], f: IO[bytes]) -> None:
    """``torch.save`` into an open file; a failed write surfaces as its ``OSError``."""
    recorder = _WriteRecorder(f)
    try:
        torch.save(state, recorder)
    except RuntimeError:
        if recorder.error is None:
            raise
        raise recorder.error from None


def save_checkpoint(path: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename) and keep only the newest ``keep`` files.

    A failed write (full disk, quota, permissions, directory gone) raises an ``OSError`` naming ``path`` and
    leaves no temporary file; the earlier checkpoints are untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise named_os_error(err, path.parent) from None
    with atomic_file(path) as f:
        _torch_save(state, f)
        sys.audit("tdmpc2_trl.phase", "checkpoint_write")  # written, not yet renamed (fault-injection tests)
    remove_stale_files(path.parent)
    if keep > 0:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def remove_stale_files(directory: Path) -> None:
    """Delete ``step_*.pt.tmp`` files that a killed process (``kill -9``, power loss) left half written."""
    for stale in Path(directory).iterdir():
        if _STALE.match(stale.name):
            with suppress(OSError):
                stale.unlink()


def list_checkpoints(directory: Path) -> list[Path]:
    """``step_*.pt`` files of a checkpoint directory, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


TRAINING_ONLY = ("loss", "updater", "replay_buffer", "rng")  # what evaluation and fine-tuning never read


def load_raw(path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of one file; ``ConfigError`` with a one-line reason if it cannot be read,
    ``UnsafeCheckpointError`` naming the offending types if it needs more than plain data. ``mmap``: tensors stay on
    disk until touched (a checkpoint's replay buffer is then never read)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # truncated or corrupt file: torch raises several exception types
        unsafe = _unsafe_types(path)
        if unsafe:
            raise UnsafeCheckpointError(
                f"checkpoint {path} refused: it needs {', '.join(unsafe)}, and loading anything beyond tensors, "
                f"numbers, strings, lists and dicts could run code (register trusted types with "
                f"torch.serialization.add_safe_globals)"
            ) from None
        if mmap and "mmap" in str(err):  # the legacy (non-zip) format cannot be mapped: read it whole
            return load_raw(path)
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}: {_first_line(err)})") from None


def load_checkpoint(
    path: Path, networks_only: bool = False, convert: Callable[[Any, Path], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Load one checkpoint file (``load_raw``). ``networks_only``: without the optimiser, RunningScale, replay-buffer
    and RNG states, which are then never read from disk (evaluation, fine-tuning). ``convert(state, path)``: turns a
    file of another format into this one (``run/official_checkpoint.official_converter``: official TD-MPC2 files;
    the run layer passes it, since reading that format needs the networks); without it such a file is refused."""
    path = Path(path)
    state = load_raw(path, mmap=networks_only)
    if not (isinstance(state, dict) and "world_model" in state):
        if convert is None:
            raise ConfigError(f"{path} is not a tdmpc2-trl checkpoint")
        return convert(state, path)
    if networks_only:
        state = {k: v for k, v in state.items() if k not in TRAINING_ONLY}
    return state


def _unsafe_types(path: Path) -> list[str]:
    """The globals a weights-only load of ``path`` refuses (empty for a file that is merely corrupt)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a readable zip archive at all
        return []


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def resolve_checkpoint(path_or_run_dir: str | Path, **load: Any) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file as given, or the newest readable checkpoint of a run directory (an unsafe file is
    refused, never skipped; an unreadable one is skipped with one line on stderr naming it and why); ``load``:
    ``load_checkpoint``'s options."""
    path = Path(path_or_run_dir)
    if path.is_file():
        return path, load_checkpoint(path, **load)
    candidates = list_checkpoints(path / "checkpoints") if path.is_dir() else []
    if not candidates:
        raise ConfigError(f"no checkpoint found at {path} (expected a .pt file or a run directory with checkpoints/)")
    errors = []
    for candidate in reversed(candidates):
        try:
            return candidate, load_checkpoint(candidate, **load)
        except UnsafeCheckpointError:
            raise
        except ConfigError as err:
            errors.append(str(err))
            if candidate != candidates[0]:
                print(f"warning: {err}; skipped, trying the one before it", file=sys.stderr, flush=True)
    raise ConfigError(f"no readable checkpoint in {path}: {'; '.join(errors)}")


def training_state(
    *,
    step: int,
    burst_done: bool,
    config: dict[str, Any],
    task: dict[str, Any],
    world_model,
    loss,
    updater,
    buffer,
    progress: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs: networks, target Q and RunningScale (``loss``), both Adam states
    (``updater``), the replay buffer, the torch/numpy/python RNG states, the step counter, the burst flag and
    ``progress`` (the recipe's pending work: updates owed, the step of the last evaluation).

    Not included: the env's episode in flight (gymnasium/dm_control envs have no generic state API), so a resumed
    run starts a fresh episode; its partial trajectory stays in the buffer and ends there.
    """
    return {
        "step": step,
        "burst_done": burst_done,
        "config": config,
        "task": task,
        "world_model": world_model.state_dict(),
        "loss": loss.state_dict(),
        "updater": updater.state_dict(),
        "replay_buffer": buffer.state_dict(),
        "rng": rng_state(),
        "progress": dict(progress or {}),
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
    """The torch (CPU and every CUDA device), numpy and python RNG states as tensors, numbers and lists (what a
    weights-only load reads). A GPU run draws its planner noise, Q heads, slices, shifts and dropout on CUDA."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    # a CPU run on a GPU machine never touched CUDA: reading its states would start it on every GPU
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``; CUDA states go to the devices this machine has (none on a CPU-only one)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])  # absent from checkpoints written before CUDA states were saved
    if cuda and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device=index)
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
