"""recipes/grid.py: a grid of two tiny Pendulum runs, stopped with SIGTERM mid-grid and run again."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdmpc2_trl.platform.checkpoint import checkpoint_path, save_checkpoint
from tdmpc2_trl.run.trainer import finished

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(ROOT / "recipes"))
import grid as grid_runner  # noqa: E402

TINY = [
    "model=1m",
    "model.latent_dim=16",
    "model.enc_dim=32",
    "model.mlp_dim=32",
    "model.horizon=2",
    "buffer.batch_size=8",
    "planner.num_samples=32",
    "planner.num_pi_trajs=4",
    "planner.num_elites=8",
    "planner.iterations=1",
    "planner.compile=false",
    "optim.compile=false",
    "eval.episodes=1",
    "threads=1",
]
STEPS = 120


def grid_args(grid_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "recipes" / "grid.py"),
        "tasks=[Pendulum-v1]",
        "seeds=[1,2]",
        f"steps={STEPS}",
        "collector.seed_steps=40",
        "checkpoint_freq=50",
        f"grid_dir={grid_dir}",
        *TINY,
    ]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the runner ended before {path} appeared:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def eval_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "eval.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigterm_mid_grid_then_rerun_resumes(tmp_path: Path):
    grid = tmp_path / "grid"
    cell1, cell2 = grid / "Pendulum-v1" / "seed1", grid / "Pendulum-v1" / "seed2"
    runner = subprocess.Popen(
        grid_args(grid), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(cell2 / "checkpoints" / "step_000000050.pt", runner)  # cell 1 finished, cell 2 in its loop
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 128 + signal.SIGTERM, out
    assert out.strip().splitlines()[-1].startswith("interrupted by SIGTERM: 1 of 2 cells unfinished"), out
    assert "done Pendulum-v1/seed1" in out and "stopped Pendulum-v1/seed2 at step" in out, out
    assert "interrupted at step" in (cell2 / "output.log").read_text()  # the run checkpointed on the signal
    final1 = cell1 / "checkpoints" / f"step_{STEPS:09d}.pt"
    stamp = final1.stat().st_mtime_ns
    assert not (grid / "results.md").exists()

    rerun = subprocess.run(grid_args(grid), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"skip Pendulum-v1/seed1: finished (step {STEPS})" in rerun.stdout
    assert "start Pendulum-v1/seed1" not in rerun.stdout and final1.stat().st_mtime_ns == stamp
    assert "start Pendulum-v1/seed2: resume from step" in rerun.stdout and rerun.stdout.count("start ") == 1
    assert "resumed from" in (cell2 / "output.log").read_text()
    assert (cell2 / "checkpoints" / f"step_{STEPS:09d}.pt").is_file()
    assert eval_steps(cell1)[-1] == STEPS and eval_steps(cell2)[-1] == STEPS
    table = (grid / "results.md").read_text()
    assert f"| Pendulum-v1 | 1m | 1,2 | 2 seeds × 1 episode | {STEPS} |" in table
    assert (grid / "results.png").stat().st_size > 10_000


def test_argument_split_and_commands(tmp_path: Path):
    own, passthrough = grid_runner.split_argv(
        [
            "tasks=[a]",
            "model=5m",
            "steps=9",
            "hydra.run.dir=x",
            "--cfg",
            "job",
            "model.latent_dim=16",
            "eval.freq=5",
            "+foo=1",
        ]
    )
    assert own == ["tasks=[a]", "model=5m", "steps=9", "hydra.run.dir=x", "--cfg", "job"]  # a flag keeps its value
    assert passthrough == ["model.latent_dim=16", "eval.freq=5", "+foo=1"]
    own, passthrough = grid_runner.split_argv(["--info", "eval.freq=5", "-cn", "grid", "--multirun", "x=1"])
    assert own == ["--info", "-cn", "grid", "--multirun"] and passthrough == ["eval.freq=5", "x=1"]
    cfg = {
        "tasks": "Pendulum-v1",
        "seeds": [3, 4],
        "model": {"name": "5m"},
        "steps": 9,
        "threads": 1,
        "parallel": 2,
        "train": ["eval.freq=5"],
        "grid_dir": str(tmp_path / "my grid"),
    }
    grid = grid_runner.make_grid(cfg, ["buffer.batch_size=8"])
    assert [c.run_dir for c in grid.cells] == [tmp_path / "my grid" / "Pendulum-v1" / f"seed{s}" for s in (3, 4)]
    command = grid_runner.train_command(grid, grid.cells[1], resume=True)
    where = f"'{tmp_path / 'my grid' / 'Pendulum-v1' / 'seed4'}'"  # quoted: the path holds a space
    assert command[2:] == [
        "task=Pendulum-v1",
        "seed=4",
        "model=5m",
        "steps=9",
        "threads=1",
        "progress=false",
        f"hydra.run.dir={where}",
        f"resume={where}",
        "eval.freq=5",
        "buffer.batch_size=8",
    ]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"seeds": [1, 1]}, "must be distinct integers"),
        ({"tasks": []}, "must be non-empty lists"),
        ({"parallel": 0}, "parallel=0 must be a positive integer"),
        ({"train": ["seed=3"]}, "the grid sets seed itself"),
        ({"tasks": ["no-such-task"]}, "unknown task"),
        ({"train": ["eval.freq=-5"]}, "for train.py: eval.freq=-5: must be an integer >= 0"),
    ],
)
def test_grid_config_errors(tmp_path: Path, change: dict, message: str):
    cfg = {
        "tasks": ["Pendulum-v1"],
        "seeds": [1],
        "model": {"name": "1m"},
        "steps": 10,
        "threads": 1,
        "parallel": 1,
        "train": [],
        "grid_dir": str(tmp_path),
        **change,
    }
    with pytest.raises(grid_runner.ConfigError, match=message):
        grid_runner.make_grid(cfg, [])


def test_a_grid_dir_refuses_other_settings(tmp_path: Path):
    cfg = {
        "tasks": ["Pendulum-v1"],
        "seeds": [1],
        "model": {"name": "1m"},
        "steps": 10,
        "threads": 1,
        "parallel": 1,
        "train": [],
        "grid_dir": str(tmp_path),
    }
    grid_runner.record_grid(grid_runner.make_grid(cfg, []))
    grid_runner.record_grid(grid_runner.make_grid({**cfg, "seeds": [1, 2], "parallel": 2}, []))  # more cells: fine
    with pytest.raises(grid_runner.ConfigError, match="holds a grid with"):
        grid_runner.record_grid(grid_runner.make_grid({**cfg, "steps": 20}, []))


def test_one_line_error_from_the_command_line(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "grid.py"), "seeds=[1,1]", f"grid_dir={tmp_path}"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: seeds=[1, 1] must be distinct")


def test_a_grid_in_use_is_refused(tmp_path: Path):
    fd = grid_runner.lock_grid(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(fd,))
    try:
        os.close(fd)  # the runner is gone, its run still holds the lock
        with pytest.raises(grid_runner.ConfigError, match="is in use"):
            grid_runner.lock_grid(tmp_path)
    finally:
        child.kill()
        child.wait()
    os.close(grid_runner.lock_grid(tmp_path))  # free again once the run has ended


def test_stopped_message_says_whether_the_cell_checkpointed(tmp_path: Path):
    cell = grid_runner.Cell("Hopper-v5", 1, tmp_path)
    assert grid_runner.stopped_message(cell, 2500) == "stopped Hopper-v5/seed1 at step 2500 (checkpointed)"
    assert grid_runner.stopped_message(cell, None) == (
        "stopped Hopper-v5/seed1 before its first checkpoint (the next run starts it afresh)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_stop_during_the_final_evaluation_is_resumed_and_evaluated_by_the_rerun(tmp_path: Path, backend: str):
    """SIGTERM to the runner while its cell evaluates at ``steps`` (the cell sends it at that phase and waits for it
    to come back): the cell's checkpoint at ``steps`` lacks that evaluation, so the grid must not call it finished.
    The Ray backend runs the cell on a local Ray instance."""
    if backend == "ray":
        pytest.importorskip("ray")
    grid, task, steps = tmp_path / "grid", "short_pendulum:ShortPendulum-v0", 20
    cell = grid / task / "seed1"
    args = [
        sys.executable,
        str(ROOT / "recipes" / "grid.py"),
        f"tasks=[{task}]",
        "seeds=[1]",
        f"steps={steps}",
        "collector.seed_steps=10",  # eval.freq stays 5000: the only evaluation is the final one
        f"grid_dir={grid}",
        "plot=false",
        f"backend={backend}",
        *TINY,
    ]
    paths = os.pathsep.join([str(ROOT), str(TESTS)])
    runner_pid = tmp_path / "runner.pid"
    faulty = {**env(), "PYTHONPATH": paths + os.pathsep + str(TESTS / "faultshim"), "FAULT": "SIGTERM"}
    faulty.update(FAULT_PHASE="final_eval", FAULT_TO=str(runner_pid))
    runner = subprocess.Popen(args, cwd=ROOT, env=faulty, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runner_pid.write_text(str(runner.pid))
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 128 + signal.SIGTERM, out
    assert f"stopped {task}/seed1 at step {steps} (checkpointed)" in out, out
    assert "interrupted by SIGTERM: 1 of 1 cells unfinished" in out, out
    assert f"interrupted at step {steps} (SIGTERM)" in (cell / "output.log").read_text()
    assert (cell / "checkpoints" / f"step_{steps:09d}.pt").is_file() and not finished(cell, steps)
    assert not (cell / "eval.csv").is_file() or eval_steps(cell) == []

    rerun = subprocess.run(
        args, cwd=ROOT, env={**env(), "PYTHONPATH": paths}, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    said = [line for line in rerun.stdout.splitlines() if line.startswith(("skip ", "start ", "done "))]
    assert said[0] == f"start {task}/seed1: resume from step {steps}" and len(said) == 2, rerun.stdout
    assert said[1].startswith(f"done {task}/seed1 " if backend == "ray" else f"done {task}/seed1 in "), rerun.stdout
    assert (
        f"resumed from {cell / 'checkpoints' / f'step_{steps:09d}.pt'} at step {steps}"
        in (cell / "output.log").read_text()
    )
    assert eval_steps(cell) == [steps]  # the final evaluation, once
    assert finished(cell, steps)


def fake_checkpoint(run_dir: Path, step: int, progress: dict[str, int] | None) -> None:
    """A checkpoint with only what the grid reads (its step and pending work)."""
    state = {"step": step, "burst_done": True, "world_model": {}}
    save_checkpoint(checkpoint_path(run_dir, step), state if progress is None else {**state, "progress": progress})


def test_the_grid_calls_finished_what_a_resumed_run_would_find_nothing_to_do(tmp_path: Path, capsys):
    cases = {  # seed: (step, progress saved) -> pending?
        1: (100, {"owed_updates": 0, "eval_step": 100}),  # finished
        2: (100, {"owed_updates": 0, "eval_step": 50}),  # stopped during its final evaluation
        3: (100, {"owed_updates": 3, "eval_step": 100}),  # stopped with updates owed
        4: (60, {"owed_updates": 0, "eval_step": 60}),  # stopped mid-run
        5: (100, None),  # a checkpoint from before progress was saved: nothing pending
    }
    cells = [grid_runner.Cell("Pendulum-v1", seed, tmp_path / f"seed{seed}") for seed in (*cases, 6)]
    for cell in cells[:-1]:
        fake_checkpoint(cell.run_dir, *cases[cell.seed])
    grid = grid_runner.Grid("1m", 100, 1, 1, [], tmp_path, cells)
    pending = grid_runner.pending_cells(grid)
    assert [c.seed for c in pending] == [2, 3, 4, 6]
    assert capsys.readouterr().out.splitlines() == [
        "skip Pendulum-v1/seed1: finished (step 100)",
        "skip Pendulum-v1/seed5: finished (step 100)",
    ]
    assert [finished(c.run_dir, 100) for c in cells] == [True, False, False, False, True, False]
    assert finished(cells[3].run_dir, 60) and not finished(cells[3].run_dir, 61)
