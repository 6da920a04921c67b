"""run/ownership.py: one owner per run directory; the lock goes with its process (kill -9 included); a record of
another host keeps the directory while its heartbeat lives and is taken over, saying so, once it stopped; the
trainer refuses an owned directory in one line (exit 2); the grid skips an owned cell."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdmpc2_trl.config.compose import load_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.run.ownership import OWNER_FILE, RunOwnership, describe_owner, owner_of
from tdmpc2_trl.run.trainer import train_app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import grid  # noqa: E402


def _record(run_dir: Path, host: str, pid: int, age_s: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    t = time.time() - age_s
    (run_dir / OWNER_FILE).write_text(json.dumps({"host": host, "pid": pid, "since": t - 60, "heartbeat": t}))


def test_a_second_owner_is_refused_naming_the_first(tmp_path: Path):
    with RunOwnership(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / OWNER_FILE).read_text())
        assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(ConfigError) as err:
            RunOwnership(tmp_path / "run").acquire()
        assert str(err.value) == (
            f"{tmp_path / 'run'} is in use by {describe_owner(record)}; one process at a "
            f"time may train in a run directory (stop it first, or wait for it to finish)"
        )
        assert f"PID {os.getpid()} on host {socket.gethostname()} since " in str(err.value)
        assert owner_of(tmp_path / "run")["pid"] == os.getpid()
    assert owner_of(tmp_path / "run") is None  # released: the record emptied, the lock dropped
    assert (tmp_path / "run" / OWNER_FILE).read_text() == ""
    RunOwnership(tmp_path / "run").acquire()  # free again


def test_the_heartbeat_moves(tmp_path: Path):
    with RunOwnership(tmp_path, heartbeat_s=0.05) as owner:
        first = owner.record["since"]
        time.sleep(0.3)
        record = json.loads((tmp_path / OWNER_FILE).read_text())
        assert record["since"] == first and record["heartbeat"] > first


def test_kill_9_releases_the_lock(tmp_path: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from tdmpc2_trl.run.ownership import RunOwnership; "
                f"RunOwnership({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    assert owner_of(tmp_path)["pid"] == holder.pid
    with pytest.raises(ConfigError, match=f"in use by PID {holder.pid} on host"):
        RunOwnership(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert json.loads((tmp_path / OWNER_FILE).read_text())["pid"] == holder.pid  # its record is left behind
    assert owner_of(tmp_path) is None  # but the kernel dropped its lock: same host, so the record is stale
    lines = []
    with RunOwnership(tmp_path, say=lines.append) as owner:
        assert owner.record["pid"] == os.getpid()
    assert lines == []  # a crashed run of this host is no news


def test_another_hosts_live_record_keeps_the_directory(tmp_path: Path):
    _record(tmp_path, "gpu-node-7", 4242, age_s=5)
    assert owner_of(tmp_path)["host"] == "gpu-node-7"  # the flock is free (another machine), the heartbeat is not
    with pytest.raises(ConfigError, match=r"is in use by PID 4242 on host gpu-node-7 since .* \(heartbeat 5 s ago\)"):
        RunOwnership(tmp_path, stale_after=600).acquire()


def test_another_hosts_stopped_heartbeat_is_taken_over_with_one_line(tmp_path: Path):
    _record(tmp_path, "gpu-node-7", 4242, age_s=700)
    assert owner_of(tmp_path) is None
    lines = []
    with RunOwnership(tmp_path, stale_after=600, say=lines.append) as owner:
        assert owner.record["host"] == socket.gethostname()
    assert len(lines) == 1
    assert lines[0].startswith(f"taking over {tmp_path} from PID 4242 on host gpu-node-7 since ")
    assert lines[0].endswith("(heartbeat 700 s ago): no heartbeat for over 600 s")


def test_training_in_an_owned_directory_is_one_line_and_exit_2(tmp_path: Path, capsys):
    cfg = load_config("config", ["model=1m", "steps=10", "threads=1", "progress=false"])
    with RunOwnership(tmp_path / "run"):
        assert train_app(cfg, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'run'} is in use by PID {os.getpid()} on host")
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything was written


def test_the_grid_skips_an_owned_cell(tmp_path: Path, capsys):
    cfg = {
        "tasks": "Pendulum-v1",
        "seeds": [1, 2],
        "model": {"name": "1m"},
        "steps": 9,
        "threads": 1,
        "parallel": 1,
        "train": [],
        "grid_dir": str(tmp_path),
    }
    g = grid.make_grid(cfg, [])
    with RunOwnership(g.cells[0].run_dir):
        assert grid.pending_cells(g) == [g.cells[1]]
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"skip Pendulum-v1/seed1: running, PID {os.getpid()} on host {socket.gethostname()}")
    assert grid.pending_cells(g) == g.cells  # released: both run


def test_an_offline_run_in_an_owned_directory_is_refused_too(tmp_path: Path, capsys):
    from tdmpc2_trl.run.offline import train_offline_app

    cfg = load_config("offline", [f"dataset={tmp_path / 'no-dataset'}", "threads=1"])
    with RunOwnership(tmp_path / "run"):
        assert train_offline_app(cfg, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'run'} is in use by PID {os.getpid()} on host")
