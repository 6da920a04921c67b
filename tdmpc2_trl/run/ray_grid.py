"""The grid runner's Ray backend (``recipes/grid.py backend=ray``): one Ray task per cell.

Each task asks for the cell's CPUs (and GPUs), runs ``train.py`` as a child process on whichever node Ray places it,
with its output appended to ``<run_dir>/output.log`` on storage every node sees, and returns how it ended and on
which node. A stop flag (a small actor) carries the runner's SIGINT/SIGTERM to the tasks: each sends its run
SIGTERM (the run checkpoints and exits). A task that loses the runner stops its run the same way.

Only the standard library and ``ray`` are used on the nodes, so that a task starts quickly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdmpc2_trl.config.schema import ConfigError

POLL_S = 0.5  # how often a task looks at its run and at the stop flag


@dataclass(frozen=True)
class Ending:
    """How a cell's run ended: its exit status (None when it did not run), the node ("" for this machine), a
    one-line reason when it did not run, and whether it started at all."""

    returncode: int | None
    node: str = ""
    error: str = ""
    started: bool = True


def node_name() -> str:
    """This node as the runner names it: its address and the head of its Ray node id (nodes may share a host)."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


def open_log(run_dir: Path, node: str):
    """Create the run directory and open its ``output.log`` for appending; a node that cannot write there says so
    in one line (its name and the path)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return open(run_dir / "output.log", "ab")
    except OSError as err:
        raise PermissionError(
            f"node {node} cannot write {err.filename or run_dir}: {err.strerror or err} "
            f"(run directories must be on storage every node sees)"
        ) from None


def run_cell(args: list[str], run_dir: str, threads: int, stop_flag: Any) -> Ending:
    """A Ray task: run ``python <args>`` in ``run_dir`` on this node until it ends or the stop flag is raised."""
    node = node_name()
    stop = watch(stop_flag)
    if stop.wait(2 * POLL_S):  # queued behind a stop: do not start
        return Ending(None, node, started=False)
    try:
        log = open_log(Path(run_dir), node)
    except PermissionError as err:
        return Ending(None, node, str(err))
    with log:  # its own session: the run is stopped by the flag only, once
        proc = spawn(args, log, threads)
    stopped = False
    while proc.poll() is None:
        if not stopped and stop.wait(POLL_S):
            stopped = True
            proc.send_signal(signal.SIGTERM)  # train.py checkpoints and exits 0
        time.sleep(0 if not stopped else POLL_S)
    return Ending(proc.returncode, node)


def spawn(args: list[str], log: Any, threads: int, **popen: Any) -> subprocess.Popen:
    """``python <args>`` in a session of its own (a Ctrl-C at the terminal reaches the runner only, which forwards
    it once), its output into ``log``, with ``threads`` OpenMP/MKL threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, **popen
    )


def watch(stop_flag: Any) -> threading.Event:
    """An event set once the runner asks to stop, or is gone (its flag dies with it).

    The flag is polled from a thread of its own: a task's main thread that blocks in ``ray.get`` lends its CPUs
    back to the node, which would then start another cell beside this one."""
    import ray

    event = threading.Event()

    def poll() -> None:
        while True:
            try:
                if ray.get(stop_flag.is_set.remote(), timeout=60):
                    break
            except (ray.exceptions.RayError, TimeoutError):
                break
            time.sleep(POLL_S)
        event.set()

    threading.Thread(target=poll, name="stop-flag", daemon=True).start()
    return event


class StopFlag:
    """Raised once by the runner on SIGINT/SIGTERM; the tasks poll it."""

    def __init__(self) -> None:
        self.raised = False

    def set(self) -> None:
        self.raised = True

    def is_set(self) -> bool:
        return self.raised


class RayBackend:
    """Cells as Ray tasks on the cluster at ``address`` (``auto``, ``host:port``, or None: a local Ray instance),
    each asking for ``cpus`` CPUs and ``gpus`` GPUs; as many run at once as the cluster has room for."""

    def __init__(self, address: str | None, cpus: int, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("backend=ray needs Ray: pip install 'tdmpc2-trl[ray]'") from None
        self.ray = ray
        if address not in (None, "auto") and not address.startswith("ray://"):
            check_reachable(address)
        try:
            # "local": a new instance even where a cluster runs on this machine (ray.init would join that one)
            ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as err:
            where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
            hint = (
                ""
                if address is None
                else (
                    " (a cluster with token authentication needs RAY_AUTH_MODE=token and "
                    "its token here: docs/grids-on-ray.md)"
                )
            )
            raise ConfigError(f"cannot start or reach {where}: {_one_line(err)}{hint}") from None
        self.warn_if_no_room(cpus, gpus)
        # no retries: a retried cell would rerun a stale command line; the grid's rerun resumes it instead
        self.task, self.resources = ray.remote(run_cell), {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0}
        self.flag = ray.remote(StopFlag).options(num_cpus=0).remote()
        self.capacity = sys.maxsize  # every cell is submitted; Ray runs those it has room for
        self.refs: dict[Any, Any] = {}  # ObjectRef -> the runner's handle (the ref itself)

    def warn_if_no_room(self, cpus: int, gpus: float) -> None:
        """One line on stderr when no live node can hold a cell now (an autoscaler may still add one)."""
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            print(
                f"warning: no node of the Ray cluster has {cpus} CPUs and {gpus:g} GPUs now; the cells wait for one",
                file=sys.stderr,
                flush=True,
            )

    def launch(self, args: list[str], run_dir: Path, threads: int) -> Any:
        """Submit a cell; its handle is the task's result."""
        ref = self.task.options(name=f"cell {run_dir}", **self.resources).remote(args, str(run_dir), threads, self.flag)
        self.refs[ref] = ref
        return ref

    def ended(self, timeout: float) -> list[tuple[Any, Ending]]:
        """The cells that ended (waiting up to ``timeout`` s for one)."""
        if not self.refs:
            time.sleep(timeout)
            return []
        done, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        out = []
        for ref in done:
            del self.refs[ref]
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayError as err:  # the worker or its node died
                out.append((ref, Ending(None, "", _one_line(err))))
        return out

    def stop_all(self) -> None:
        """Ask every task to stop its run (and the queued ones not to start)."""
        self.flag.set.remote()

    def close(self) -> None:
        self.ray.shutdown()


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in one line when nothing listens at ``host:port`` (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray_address={address}: must be auto, host:port or null (a local Ray instance)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message that says something."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
