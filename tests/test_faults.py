"""Faults at every phase of a run: nothing done is lost, every failure is one line, and ``resume=`` finishes the run.

The matrix: faults {SIGTERM, SIGINT, kill -9 then resume, disk full (ENOSPC), NaN observations} x phases {start-up,
seed steps, initial burst, loop, evaluation, checkpoint write, final evaluation}. A run is 130 env steps of a
20-step Pendulum (``tests/short_pendulum.py``): seed steps 1-60 (a periodic evaluation and checkpoint at 50), the
burst of 60 updates at step 60, the loop 61-130 (evaluation and checkpoint at 100), the final evaluation at 130.
``tests/faultshim/sitecustomize.py`` injects each fault when the recipe announces the phase (no sleeps). One run
directory carries a chain of cells: each resumes the previous one, so the chain ends with a finished run whose
``eval.csv`` and ``train.csv`` must hold each row exactly once.
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.data.replay_buffer import make_replay_buffer
from tdmpc2_trl.envs.video import write_video
from tdmpc2_trl.platform.checkpoint import (
    UnsafeCheckpointError,
    checkpoint_path,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from tdmpc2_trl.run.logs import CSVTable

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
TINY = [
    "task=short_pendulum:ShortPendulum-v0",
    "model=1m",
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.num_q=2",
    "model.horizon=3",
    "buffer.batch_size=16",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=2",
    "planner.compile=false",
    "optim.compile=false",
    "progress=false",
    "eval.episodes=1",
    "threads=1",
    "precision=fp32",
]
RUN = ["steps=130", "collector.seed_steps=60", "eval.freq=50", "checkpoint_freq=50"]
NO_SPACE = "No space left on device"


def train(
    *overrides: str,
    fault: str = "",
    phase: str = "",
    delay: float = 0.0,
    nan_at: str = "",
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """recipes/train.py with the fault shim: ``fault`` (SIGTERM, SIGINT, SIGKILL or ENOSPC:<glob>) at ``phase``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAULT", "NAN_AT"))}
    env.update(
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="0",
        PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS / "faultshim")]),
        FAULT=fault,
        FAULT_PHASE=phase,
        FAULT_DELAY=str(delay),
        NAN_AT=nan_at,
    )
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train.py"), *TINY, *RUN, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )


def newest_step(run_dir: Path) -> int | None:
    """The step of the newest readable checkpoint (``None``: there is none)."""
    try:
        return int(resolve_checkpoint(run_dir)[1]["step"])
    except ConfigError:
        return None


def check_cell(
    proc: subprocess.CompletedProcess, run_dir: Path, *, rc: int, says: str | None, newest: int | None
) -> str:
    """Exit code, one message line (stdout for a signal, stderr for an error) and no traceback, the newest
    readable checkpoint's step, no temporary file left. Returns the message line."""
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == rc, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    assert newest_step(run_dir) == newest, output
    assert not [p for p in run_dir.rglob("*.tmp")], output
    if says is None:
        return ""
    stream = proc.stderr if rc == 2 else proc.stdout
    lines = stream.strip().splitlines()
    assert lines and says in lines[-1], output
    keyword = "error:" if rc == 2 else "interrupted"
    if keyword in says:
        assert sum(keyword in line for line in proc.stdout.splitlines() + proc.stderr.splitlines()) == 1, output
    return lines[-1]


def resume_from(message: str, run_dir: Path) -> list[str]:
    """The overrides of the resume command that an interrupted run printed (it must name the run directory),
    less those that ``train`` passes anyway."""
    command = shlex.split(message.split("continue with: ", 1)[1])
    assert command[0] == "python" and command[1].endswith("train.py"), message
    assert command[-1] == f"resume={run_dir}", message
    return [arg for arg in command[2:] if arg not in TINY + RUN]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def done_steps(run_dir: Path) -> list[int]:
    """Steps at which an episode ended, read from the replay buffer of the newest checkpoint (one env, buffer as
    long as the run: row i holds step i + 1)."""
    state = resolve_checkpoint(run_dir)[1]
    buffer = make_replay_buffer(capacity=130, batch_size=16, horizon=3)
    buffer.load_state_dict(state["replay_buffer"])
    done = buffer.storage[:]["next", "done"].reshape(-1)
    return [int(i) + 1 for i in torch.nonzero(done).flatten()]


def check_logs_continue(run_dir: Path) -> None:
    """The finished run logged each evaluation once and one train row per finished episode, none twice."""
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [50, 100, 130]
    assert [int(r["step"]) for r in read_csv(run_dir / "train.csv")] == done_steps(run_dir)


@pytest.mark.slow
def test_signal_at_start_up_of_a_new_run_exits_with_one_line(tmp_path: Path):
    """SIGTERM while the run builds its envs and networks: nothing to save, one line, exit 0."""
    run_dir = tmp_path / "run"
    proc = train(f"hydra.run.dir={run_dir}", fault="SIGTERM", phase="startup")
    check_cell(
        proc,
        run_dir,
        rc=0,
        says="interrupted during start-up (SIGTERM), before the first env step: "
        "nothing to save yet; run the same command again",
        newest=None,
    )
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_signals_at_every_phase_lose_nothing(tmp_path: Path):
    """SIGINT/SIGTERM in the seed steps, at start-up of the resumed run, in the burst, the loop, an evaluation,
    the final evaluation and a checkpoint write; each resume uses the command the previous run printed."""
    run_dir = tmp_path / "run"
    msg = check_cell(
        train(f"hydra.run.dir={run_dir}", fault="SIGINT", phase="seed#30"),
        run_dir,
        rc=0,
        says="interrupted at step 30 (SIGINT): checkpoint saved to",
        newest=30,
    )
    resume = resume_from(msg, run_dir)
    check_cell(
        train(*resume, fault="SIGTERM", phase="startup"),
        run_dir,
        rc=0,
        says="interrupted during start-up (SIGTERM)",
        newest=30,
    )
    cells = [  # (fault, phase, the step it stops at and saves)
        ("SIGTERM", "burst#20", 60),  # 19 of the 60 burst updates done: 41 are owed
        ("SIGINT", "loop#10", 70),
        ("SIGTERM", "eval#1", 100),  # the evaluation at 100 is pending
        ("SIGINT", "final_eval", 130),
    ]
    for fault, phase, step in cells:
        msg = check_cell(
            train(*resume, fault=fault, phase=phase),
            run_dir,
            rc=0,
            says=f"interrupted at step {step} ({fault}): checkpoint saved to {checkpoint_path(run_dir, step)}",
            newest=step,
        )
        resume = resume_from(msg, run_dir)
    state = resolve_checkpoint(run_dir)[1]
    assert state["progress"] == {"owed_updates": 0, "eval_step": 100}  # the final evaluation is still to do
    check_cell(
        train(*resume, fault="SIGTERM", phase="checkpoint_write"),
        run_dir,
        rc=0,  # the write finishes
        says=f"interrupted at step 130 (SIGTERM): checkpoint {checkpoint_path(run_dir, 130)} holds everything so far",
        newest=130,
    )
    check_cell(train(*resume), run_dir, rc=0, says="nothing to do: the run is already at step 130", newest=130)
    check_logs_continue(run_dir)


@pytest.mark.slow
def test_kill_and_full_disk_at_every_phase_lose_nothing(tmp_path: Path):
    """kill -9 in the loop and during a checkpoint write; a full disk for the checkpoint, train.csv (loop),
    eval.csv (an evaluation, the final evaluation). Each resumes from the newest good checkpoint."""
    run_dir = tmp_path / "run"
    resume = [f"resume={run_dir}"]
    proc = train(f"hydra.run.dir={run_dir}", fault="SIGKILL", phase="loop#5")  # step 65: last checkpoint at 50
    check_cell(proc, run_dir, rc=-signal.SIGKILL, says=None, newest=50)
    assert max(int(r["step"]) for r in read_csv(run_dir / "train.csv")) > 50  # logged, then lost with the process
    full = [  # (files, phase): the fault starts at that phase
        (f"*/checkpoints/{checkpoint_path(run_dir, 100).name}.tmp", ""),
        ("*/train.csv", "loop"),
        ("*/eval.csv", "eval"),
    ]
    for files, phase in full:
        target = checkpoint_path(run_dir, 100) if "checkpoints" in files else run_dir / files.split("/")[-1]
        check_cell(
            train(*resume, fault=f"ENOSPC:{files}", phase=phase),
            run_dir,
            rc=2,
            says=f"error: cannot write {target}: {NO_SPACE}",
            newest=50,
        )
    proc = train(*resume, fault="SIGKILL", phase="checkpoint_write")  # dies between writing and renaming
    assert proc.returncode == -signal.SIGKILL and newest_step(run_dir) == 50
    assert [p.name for p in (run_dir / "checkpoints").glob("*.tmp")] == ["step_000000100.pt.tmp"]
    check_cell(
        train(*resume, fault="ENOSPC:*/eval.csv", phase="final_eval"),
        run_dir,
        rc=2,  # removes that .tmp
        says=f"error: cannot write {run_dir / 'eval.csv'}: {NO_SPACE}",
        newest=100,
    )
    check_cell(train(*resume), run_dir, rc=0, says="done: 130 env steps", newest=130)
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_000000100.pt", "step_000000130.pt"]
    check_logs_continue(run_dir)


@pytest.mark.slow
def test_full_disk_at_start_up_is_one_line(tmp_path: Path):
    """config.yaml cannot be written: one line naming it, its partial file removed, exit 2."""
    run_dir = tmp_path / "run"
    proc = train(f"hydra.run.dir={run_dir}", fault="ENOSPC:*/config.yaml.tmp")
    check_cell(proc, run_dir, rc=2, says=f"error: cannot write {run_dir / 'config.yaml'}: {NO_SPACE}", newest=None)
    assert not (run_dir / "config.yaml").exists()


@pytest.mark.slow
def test_full_disk_for_the_memmap_buffer_in_the_seed_steps_is_one_line(tmp_path: Path):
    """buffer.storage=memmap: the memory maps are created at the first seed step; a full disk then is one line
    naming the file, exit 2, no map file left behind (the same command then runs through)."""
    run_dir = tmp_path / "run"
    proc = train(f"hydra.run.dir={run_dir}", "buffer.storage=memmap", fault="ENOSPC:*/buffer/*")
    line = check_cell(proc, run_dir, rc=2, says=f"error: cannot write {run_dir / 'buffer'}/", newest=None)
    assert line.endswith(f".memmap: {NO_SPACE}") and not list((run_dir / "buffer").iterdir())


@pytest.mark.slow
def test_nan_observations_in_every_phase_are_reported_and_the_run_finishes(tmp_path: Path):
    """NaN observations at seed step 30 (then sampled by the burst), in the evaluation at 50, at loop step 80 and
    in the final evaluation (process env steps 30, 60, 100, 180): the run warns with the step and finishes."""
    run_dir = tmp_path / "run"
    proc = train(f"hydra.run.dir={run_dir}", nan_at="30,60,100,180")
    check_cell(proc, run_dir, rc=0, says="done: 130 env steps", newest=130)
    out = proc.stdout + proc.stderr
    assert "non-finite observation at step 30" in out and "non-finite observation at step 80" in out
    assert "evaluation env returned a non-finite observation at its step 10, in the evaluation at step 50" in out
    assert "evaluation env returned a non-finite observation at its step 10, in the evaluation at step 130" in out
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [50, 100, 130]
    assert [int(r["step"]) for r in read_csv(run_dir / "train.csv")] == done_steps(run_dir)


@pytest.mark.slow
def test_signal_inside_the_compiled_planner_during_the_final_evaluation(tmp_path: Path):
    """SIGTERM 3 s into the final evaluation, while torch.compile builds the planner's graph for the evaluation's
    batch of 2 envs (training plans for 1): checkpoint, one line, exit 0; the resumed run evaluates and finishes."""
    run_dir = tmp_path / "run"
    compiled = [
        f"hydra.run.dir={run_dir}",
        "planner.compile=true",
        "steps=60",
        "eval.freq=0",
        "checkpoint_freq=0",
        "eval.episodes=2",
    ]
    # an empty inductor cache: the evaluation's graph really compiles (for many seconds) when the signal comes
    proc = train(
        *compiled,
        fault="SIGTERM",
        phase="final_eval",
        delay=3.0,
        extra_env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    msg = check_cell(proc, run_dir, rc=0, says="interrupted at step 60 (SIGTERM): checkpoint saved to", newest=60)
    assert not (run_dir / "eval.csv").is_file() or not read_csv(run_dir / "eval.csv")
    proc = train(*resume_from(msg, run_dir), "planner.compile=false")
    check_cell(proc, run_dir, rc=0, says="done: 60 env steps", newest=60)
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [60]


# --- the write sites and safe loading, in process ---


def _full_disk(path: Path) -> None:
    """Make ``path`` a symlink to /dev/full: the next writes to it fail with ENOSPC in the kernel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/full", path)


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_write_keeps_the_earlier_ones(tmp_path: Path):
    state = {"step": 1, "world_model": {"w": torch.zeros(300_000)}}
    save_checkpoint(checkpoint_path(tmp_path, 1), state)
    target = checkpoint_path(tmp_path, 2)
    _full_disk(target.with_name(target.name + ".tmp"))
    with pytest.raises(OSError) as err:
        save_checkpoint(target, {**state, "step": 2})
    assert (err.value.filename, err.value.strerror) == (str(target), NO_SPACE)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [checkpoint_path(tmp_path, 1).name]


def test_torch_runtime_error_over_a_failed_write_becomes_the_os_error(tmp_path: Path, monkeypatch):
    """torch reports some failed writes as a RuntimeError about the zip writer: the file's OSError is raised."""

    def save(obj, f):
        try:
            f.write(b"x" * (1 << 20))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", save)
    target = checkpoint_path(tmp_path, 3)
    _full_disk(target.with_name(target.name + ".tmp"))
    with pytest.raises(OSError, match=NO_SPACE):
        save_checkpoint(target, {})
    assert not list((tmp_path / "checkpoints").iterdir())


def test_csv_row_that_cannot_be_written_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch):
    table = CSVTable(tmp_path / "eval.csv", ["step", "episode_reward"])
    table.append({"step": 1, "episode_reward": 2.0})
    before = table.path.read_bytes()

    real_open = open

    class HalfWritten:
        """A file whose write puts half the text on disk, then fails as a full disk does."""

        def __init__(self, path, mode, **kwargs):
            self.f = real_open(path, mode, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise OSError(28, NO_SPACE)

    def appends_half(path, mode="r", **kwargs):
        return HalfWritten(path, mode, **kwargs) if mode == "a" else real_open(path, mode, **kwargs)

    monkeypatch.setattr("builtins.open", appends_half)
    with pytest.raises(OSError) as err:
        table.append({"step": 2, "episode_reward": 3.0})
    monkeypatch.undo()
    assert (err.value.filename, err.value.strerror) == (str(table.path), NO_SPACE)
    assert table.path.read_bytes() == before
    table.append({"step": 3, "episode_reward": 4.0, "new": 1.0})  # widening rewrites atomically
    assert table.keep_until(1) == 1
    assert [r["step"] for r in read_csv(table.path)] == ["1"] and list(read_csv(table.path)[0]) == [
        "step",
        "episode_reward",
        "new",
    ]


def test_video_that_cannot_be_written_leaves_no_partial_file(tmp_path: Path):
    target = tmp_path / "videos" / "eval_step_000000050.mp4"
    _full_disk(target.with_name(f".{target.name}.{os.getpid()}.tmp"))
    frames = [torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()] * 60
    with pytest.raises(OSError) as err:
        write_video(target, frames)
    assert (err.value.filename, err.value.errno) == (str(target), 28)
    assert not list(target.parent.iterdir())


def _unsafe_checkpoint(path: Path) -> None:
    """A checkpoint that runs ``os.system`` when unpickled without ``weights_only``."""

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 9, "world_model": {}, "hook": Payload()}, path)


def test_checkpoint_that_needs_code_is_refused_naming_the_type(tmp_path: Path):
    save_checkpoint(checkpoint_path(tmp_path, 1), {"step": 1, "world_model": {"w": torch.ones(2)}})
    bad = checkpoint_path(tmp_path, 2)
    _unsafe_checkpoint(bad)
    for target in (bad, tmp_path):  # the file, or its run directory: refused, never skipped for an older file
        with pytest.raises(UnsafeCheckpointError, match=r"refused: it needs posix\.system") as err:
            resolve_checkpoint(target)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_eval_recipe_refuses_a_checkpoint_that_needs_code(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    _unsafe_checkpoint(bad)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "eval.py"), f"checkpoint={bad}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "pwned" not in proc.stdout
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {bad} refused: it needs posix.system, and loading anything beyond tensors, numbers, "
        f"strings, lists and dicts could run code (register trusted types with "
        f"torch.serialization.add_safe_globals)"
    ]
