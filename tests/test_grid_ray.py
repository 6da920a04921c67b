"""recipes/grid.py backend=ray: the cells as Ray tasks on a two-node cluster started here on loopback (a run killed,
the grid stopped with SIGTERM, the rerun resuming both), results identical to the local backend's; the runner's
reports from a scripted backend; the one-line errors."""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT / "tests"))
import grid
from test_grid import TINY, env, fake_checkpoint

from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.run.ray_grid import Ending, RayBackend, check_reachable, open_log

STEPS = 120
DONE = re.compile(r"^done (\S+) on node (\S+) in \d+ s$", re.MULTILINE)


def grid_args(grid_dir: Path, seeds: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "recipes" / "grid.py"),
        "tasks=[Pendulum-v1]",
        f"seeds={seeds}",
        f"steps={STEPS}",
        "collector.seed_steps=40",
        "checkpoint_freq=50",
        "eval.freq=60",
        f"grid_dir={grid_dir}",
        *TINY,
        *extra,
    ]


class Output:
    """A process's output, read line by line in a thread, so that a test can wait for a line while it runs."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self.reader = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, what: str | Path, timeout: float = 300) -> None:
        """Until a line starts with ``what`` (a str), or the file ``what`` (a Path) exists."""
        deadline = time.monotonic() + timeout
        while not (what.exists() if isinstance(what, Path) else any(x.startswith(what) for x in self.lines)):
            assert self.proc.poll() is None, f"the runner ended before {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.text()}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> str:
        self.proc.wait(timeout)
        self.reader.join(timeout)
        return self.text()


def train_pid(run_dir: Path) -> int:
    """The pid of the train.py process that runs in ``run_dir`` (on a node of this machine)."""
    mark = f"hydra.run.dir={run_dir}".encode()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in argv and any(a.endswith(b"train.py") for a in argv):
            return int(entry.name)
    raise AssertionError(f"no train.py runs in {run_dir}")


def eval_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grid_on_a_two_node_ray_cluster(tmp_path: Path):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)  # one cell per node at a time
        cluster.wait_for_nodes()
        on_ray = ("backend=ray", f"ray_address={cluster.address}")
        grid_dir = tmp_path / "ray"
        cell1, cell2, cell3 = (grid_dir / "Pendulum-v1" / f"seed{s}" for s in (1, 2, 3))
        runner = subprocess.Popen(
            grid_args(grid_dir, "[1,2,3]", *on_ray),
            cwd=ROOT,
            env=env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = Output(runner)
        output.wait_for(cell2 / "checkpoints" / "step_000000050.pt")
        os.kill(train_pid(cell2), signal.SIGKILL)  # a run dies mid-way; seed 3 takes its node
        output.wait_for("done Pendulum-v1/seed1")
        output.wait_for(cell3 / "checkpoints" / "step_000000050.pt")
        runner.send_signal(signal.SIGTERM)  # seed 3 checkpoints and stops
        out = output.finish(timeout=120)
        print(out)
        assert runner.returncode == 128 + signal.SIGTERM, out
        nodes = dict(DONE.findall(out))
        failed = re.search(
            rf"^FAILED Pendulum-v1/seed2 on node (\S+) \(exit -9\): killed by SIGKILL "
            rf"\(its log: {re.escape(str(cell2))}/output.log\)$",
            out,
            re.MULTILINE,
        )
        stopped = re.search(
            r"^stopped Pendulum-v1/seed3 at step (\d+) \(checkpointed\) on node (\S+)$", out, re.MULTILINE
        )
        assert failed and stopped and "Pendulum-v1/seed1" in nodes, out
        # one cell per node at a time: seeds 1 and 2 side by side, seed 3 on seed 2's node once that was free
        assert nodes["Pendulum-v1/seed1"] != failed.group(1) and stopped.group(2) == failed.group(1), out
        assert out.strip().splitlines()[-1].startswith("interrupted by SIGTERM: 2 of 3 cells unfinished"), out
        assert "interrupted at step" in (cell3 / "output.log").read_text()

        # the rerun resumes seeds 2 and 3 on the cluster, while the local backend runs seed 1 alone
        local = subprocess.Popen(
            grid_args(tmp_path / "local", "[1]", "plot=false"),
            cwd=ROOT,
            env=env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        rerun = subprocess.run(
            grid_args(grid_dir, "[1,2,3]", *on_ray),
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        local_out, _ = local.communicate(timeout=180)
        print(rerun.stdout, rerun.stderr, local_out)
        assert rerun.returncode == 0 and local.returncode == 0, rerun.stdout + rerun.stderr + local_out
        assert f"skip Pendulum-v1/seed1: finished (step {STEPS})" in rerun.stdout
        assert "start Pendulum-v1/seed2: resume from step 50" in rerun.stdout
        assert f"start Pendulum-v1/seed3: resume from step {stopped.group(1)}" in rerun.stdout
        assert set(dict(DONE.findall(rerun.stdout))) == {"Pendulum-v1/seed2", "Pendulum-v1/seed3"}
        for cell in (cell2, cell3):
            assert "resumed from" in (cell / "output.log").read_text()
            assert eval_rows(cell)[-1]["step"] == str(STEPS)
        assert "| Pendulum-v1 | 1m | 1,2,3 |" in (grid_dir / "results.md").read_text()
        same_seed = tmp_path / "local" / "Pendulum-v1" / "seed1"
        assert eval_rows(cell1) == eval_rows(same_seed) and len(eval_rows(cell1)) == 2  # steps 60 and 120
    finally:
        cluster.shutdown()


class ScriptedBackend:
    """Ends the cells as told, in launch order, one per poll; records what it was asked."""

    capacity = 2

    def __init__(self, endings: list[Ending]) -> None:
        self.endings, self.launched, self.handles, self.stops = list(endings), [], [], 0

    def launch(self, args: list[str], run_dir: Path, threads: int) -> int:
        self.launched.append((args, run_dir, threads))
        self.handles.append(len(self.launched))
        return self.handles[-1]

    def ended(self, timeout: float) -> list[tuple[int, Ending]]:
        return [(self.handles.pop(0), self.endings.pop(0))] if self.handles else []

    def stop_all(self) -> None:
        self.stops += 1


def make_tiny_grid(tmp_path: Path, seeds: list[int]) -> grid.Grid:
    cfg = {
        "tasks": ["Pendulum-v1"],
        "seeds": seeds,
        "model": {"name": "1m"},
        "steps": 10,
        "threads": 1,
        "parallel": 1,
        "train": [],
        "grid_dir": str(tmp_path),
    }
    return grid.make_grid(cfg, [])


def test_runner_reports_each_ending_with_its_node(tmp_path: Path, capsys):
    made = make_tiny_grid(tmp_path, [1, 2, 3])
    fake_checkpoint(made.cells[0].run_dir, 10, {"owed_updates": 0, "eval_step": 10})  # finished
    backend = ScriptedBackend(
        [
            Ending(0, "10.0.0.1/aa"),
            Ending(None, "10.0.0.2/bb", "node 10.0.0.2/bb cannot write x"),
            Ending(None, "", "The node with node id: cc has been marked dead"),
        ]
    )
    runner = grid.Runner(made, backend)
    runner.run(made.cells)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("start")] == [
        "start Pendulum-v1/seed1",
        "start Pendulum-v1/seed2",
        "start Pendulum-v1/seed3",
    ]
    assert re.fullmatch(r"done Pendulum-v1/seed1 on node 10\.0\.0\.1/aa in \d+ s", lines[2])
    assert "FAILED Pendulum-v1/seed2 on node 10.0.0.2/bb: node 10.0.0.2/bb cannot write x" in lines
    assert "FAILED Pendulum-v1/seed3: The node with node id: cc has been marked dead" in lines
    assert runner.failed == made.cells[1:]
    args, run_dir, threads = backend.launched[1]
    assert args == grid.train_command(made, made.cells[1], resume=False)[1:]
    assert run_dir == made.cells[1].run_dir and threads == 1


def test_a_signal_stops_the_running_cells_and_leaves_the_queued_ones(tmp_path: Path, capsys):
    made = make_tiny_grid(tmp_path, [1, 2])
    backend = ScriptedBackend([Ending(0, "n1"), Ending(None, "n2", started=False)])
    runner = grid.Runner(made, backend)
    signals = iter([signal.SIGTERM, signal.SIGINT])  # the second signal comes while the runs stop
    ended = backend.ended
    backend.ended = lambda timeout: (runner.on_signal(next(signals, signal.SIGINT), None), ended(timeout))[1]
    runner.run(made.cells)
    lines = capsys.readouterr().out.splitlines()
    assert backend.stops == 1 and runner.signum == signal.SIGTERM and runner.failed == []
    assert lines == [
        "start Pendulum-v1/seed1: new run",
        "start Pendulum-v1/seed2: new run",
        "stopped Pendulum-v1/seed1 before its first checkpoint (the next run starts it afresh) on node n1",
    ]


def test_a_run_signalled_after_its_final_checkpoint_is_done(tmp_path: Path, capsys):
    made = make_tiny_grid(tmp_path, [1])
    (made.cells[0].run_dir / "checkpoints").mkdir(parents=True)
    backend = ScriptedBackend([Ending(-signal.SIGTERM, "n1")])
    runner = grid.Runner(made, backend)
    launch = backend.launch

    def launch_then_finish(*args):  # the run writes its final checkpoint, then the signal comes
        handle = launch(*args)
        fake_checkpoint(made.cells[0].run_dir, 10, {"owed_updates": 0, "eval_step": 10})
        runner.on_signal(signal.SIGTERM, None)
        return handle

    backend.launch = launch_then_finish
    runner.run(made.cells)
    assert re.fullmatch(r"done Pendulum-v1/seed1 on node n1 in \d+ s", capsys.readouterr().out.splitlines()[-1])
    assert runner.failed == []


def test_a_node_that_cannot_write_says_so(tmp_path: Path):
    (tmp_path / "Pendulum-v1").write_text("")  # a file where the run directory's parent should be
    with pytest.raises(PermissionError) as err:
        open_log(tmp_path / "Pendulum-v1" / "seed1", "10.0.0.7/0a1b2c3d")
    assert str(err.value) == (
        f"node 10.0.0.7/0a1b2c3d cannot write {tmp_path / 'Pendulum-v1' / 'seed1'}: "
        f"Not a directory (run directories must be on storage every node sees)"
    )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"backend": "slurm"}, "backend='slurm' must be local or ray"),
        ({"ray_gpus": -1}, "ray_gpus=-1 must be a number >= 0"),
    ],
)
def test_backend_config_errors(change: dict, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        grid.check_backend({"backend": "ray", **change})


def test_an_unreachable_cluster_fails_at_once():
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused")
    ):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=re.escape("ray_address=headnode: must be auto, host:port or null")):
        check_reachable("headnode")


def test_ray_backend_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    with pytest.raises(ConfigError, match=re.escape("backend=ray needs Ray: pip install 'tdmpc2-trl[ray]'")):
        RayBackend(None, 1, 0)


def test_a_relative_grid_dir_reaches_the_nodes_as_an_absolute_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a node's task runs elsewhere: it must not resolve the path itself
    made = grid.make_grid(
        {
            "tasks": ["Pendulum-v1"],
            "seeds": [1],
            "model": {"name": "1m"},
            "steps": 10,
            "threads": 1,
            "parallel": 1,
            "train": [],
            "grid_dir": "runs/grid",
        },
        [],
    )
    assert made.cells[0].run_dir == tmp_path / "runs" / "grid" / "Pendulum-v1" / "seed1"
    assert f"hydra.run.dir={tmp_path}/runs/grid/Pendulum-v1/seed1" in grid.train_command(made, made.cells[0], False)
