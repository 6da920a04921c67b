"""Run a grid of recipes/train.py runs (tasks × seeds), resume it after an interruption, plot it against the paper.

    python recipes/grid.py tasks=[cartpole-swingup,walker-walk] seeds=[1,2,3] model=1m steps=50000 parallel=2
    python recipes/grid.py tasks=[cheetah-run] seeds=[1] model=5m steps=50000 grid_dir=~/grids/5m eval.freq=5000

Each cell (task, seed) runs ``recipes/train.py`` in ``<grid_dir>/<task>/seed<seed>`` (its output in ``output.log``
there), with ``threads`` torch threads, ``parallel`` cells at once. Key=value arguments that are not this script's
(``configs/grid.yaml``) go to every train.py run. Running the same command again skips the finished cells (a
checkpoint at ``steps`` with its final evaluation logged, as train.py's resume decides:
``tdmpc2_trl.run.trainer.finished``), resumes the others from their newest checkpoint and starts the rest.
SIGINT/SIGTERM stop the runs (each checkpoints and exits) and then the runner, with one line. At the end the grid's
plot and table are written to ``<grid_dir>/results.png`` and ``results.md``.

``backend=ray`` runs each cell as a Ray task instead (``tdmpc2_trl/run/ray_grid.py``; ``ray_address=auto|host:port``,
null for a local Ray instance; ``threads`` CPUs and ``ray_gpus`` GPUs per cell), as many at once as the cluster has
room for, with ``grid_dir`` on storage every node sees (docs/grids-on-ray.md). Which cells run, and how they are
started, resumed and reported, is the same for both backends (``pending_cells``, ``begin``, ``Runner``).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import hydra
from omegaconf import DictConfig, OmegaConf

from tdmpc2_trl.config.compose import config_dir, load_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.envs.factory import task_info
from tdmpc2_trl.platform.checkpoint import list_checkpoints
from tdmpc2_trl.results.plot import report
from tdmpc2_trl.run.ownership import describe_owner, owner_of
from tdmpc2_trl.run.ray_grid import Ending, spawn
from tdmpc2_trl.run.trainer import finished

TRAIN = Path(__file__).resolve().parent / "train.py"
OWN_KEYS = frozenset(OmegaConf.load(config_dir() / "grid.yaml")) - {"defaults"} | {"model"}
SET_BY_THE_GRID = {
    "task": "tasks=[...]",
    "seed": "seeds=[...]",
    "resume": "a rerun of the grid (it resumes itself)",
    "progress": "the runner (progress=false)",
}
GRID_FILE = "grid.yaml"
POLL_S = 0.2


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a task and a seed, in its own run directory."""

    task: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.task}/seed{self.seed}"


@dataclass(frozen=True)
class Grid:
    """What every run of the grid shares, and the cells."""

    model: str
    steps: int
    threads: int
    parallel: int
    train: list[str]
    grid_dir: Path
    cells: list[Cell]

    def identity(self) -> dict[str, Any]:
        """The settings a grid directory is tied to (its runs resume under them)."""
        return {"model": self.model, "steps": self.steps, "train": list(self.train)}


# ---------------------------------------------------------------- the command line


# Hydra's flags that take the next argument as their value (``--cfg job``, ``-cn grid``, ``--info config``)
HYDRA_VALUE_FLAGS = frozenset(
    {
        "--cfg",
        "-c",
        "--package",
        "-p",
        "--config-path",
        "-cp",
        "--config-name",
        "-cn",
        "--config-dir",
        "-cd",
        "--experimental-rerun",
        "--info",
        "-i",
    }
)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """This script's overrides (keys of configs/grid.yaml, hydra.*, flags and their values) and the ones for
    train.py."""
    own, passthrough = [], []
    flag_value_next = False
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        is_flag_value = flag_value_next and "=" not in arg and not arg.startswith("-")
        is_own = is_flag_value or arg.startswith("-") or key in OWN_KEYS or key == "hydra" or key.startswith("hydra.")
        (own if is_own else passthrough).append(arg)
        flag_value_next = arg in HYDRA_VALUE_FLAGS
    return own, passthrough


def check_passthrough(overrides: list[str]) -> None:
    """Keys the grid sets itself cannot be given for its runs."""
    for arg in overrides:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in SET_BY_THE_GRID:
            raise ConfigError(f"{arg}: the grid sets {key} itself (use {SET_BY_THE_GRID[key]})")
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError(f"{arg!r} is not a key=value override")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")
    return value


def _as_list(value: Any) -> Any:
    """``tasks=cheetah-run`` means ``tasks=[cheetah-run]`` (likewise one seed)."""
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


def make_grid(cfg: dict[str, Any], passthrough: list[str]) -> Grid:
    """The grid from the config: one cell per (task, seed), tasks checked by name first."""
    tasks, seeds = _as_list(cfg["tasks"]), _as_list(cfg["seeds"])
    if not isinstance(tasks, list) or not tasks or not isinstance(seeds, list) or not seeds:
        raise ConfigError("tasks=[...] and seeds=[...] must be non-empty lists")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"seeds={seeds} must be distinct integers >= 0")
    for task in tasks:
        task_info(str(task))  # an unknown task fails here, in one line, before any run starts
    train = [str(a) for a in (cfg["train"] or [])] + passthrough
    check_passthrough(train)
    try:  # train.py's own settings, checked once before any run starts
        load_config("config", [f"model={cfg['model']['name']}", *train])
    except ConfigError as err:
        raise ConfigError(f"for train.py: {err}") from None
    grid_dir = Path(str(cfg["grid_dir"])).expanduser().absolute()  # the same on every node of a cluster
    cells = [Cell(str(t), int(s), grid_dir / str(t) / f"seed{s}") for t in tasks for s in seeds]
    return Grid(
        str(cfg["model"]["name"]),
        _positive_int("steps", cfg["steps"]),
        _positive_int("threads", cfg["threads"]),
        _positive_int("parallel", cfg["parallel"]),
        train,
        grid_dir,
        cells,
    )


def record_grid(grid: Grid) -> None:
    """Write ``grid.yaml`` on the first run; on a rerun, refuse different settings (the runs could not resume)."""
    path = grid.grid_dir / GRID_FILE
    if path.is_file():
        found = OmegaConf.to_container(OmegaConf.load(path))
        if found != grid.identity():
            raise ConfigError(
                f"{grid.grid_dir} holds a grid with {found}, not {grid.identity()}; rerun it with "
                f"those settings or choose another grid_dir="
            )
        return
    grid.grid_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(grid.identity()), path)


# ---------------------------------------------------------------- cells


def checkpoint_step(path: Path) -> int:
    """The env step of ``checkpoints/step_XXXXXXXXX.pt``."""
    return int(re.fullmatch(r"step_(\d+)\.pt", path.name).group(1))


def latest_step(cell: Cell) -> int | None:
    """The step of the cell's newest checkpoint (None without one)."""
    found = list_checkpoints(cell.run_dir / "checkpoints")
    return checkpoint_step(found[-1]) if found else None


def train_command(grid: Grid, cell: Cell, resume: bool) -> list[str]:
    """The train.py command line of a cell (a fresh run, or one that continues from its newest checkpoint)."""
    where = _hydra_value(str(cell.run_dir))
    return [
        sys.executable,
        str(TRAIN),
        f"task={cell.task}",
        f"seed={cell.seed}",
        f"model={grid.model}",
        f"steps={grid.steps}",
        f"threads={grid.threads}",
        "progress=false",
        f"hydra.run.dir={where}",
        *([f"resume={where}"] if resume else []),
        *grid.train,
    ]


def _hydra_value(text: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters Hydra would parse)."""
    if re.fullmatch(r"[\w./:~-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clear_partial_logs(cell: Cell) -> None:
    """A cell stopped before its first checkpoint starts afresh: drop the rows its logs got (they would repeat)."""
    for name in ("eval.csv", "train.csv"):
        (cell.run_dir / name).unlink(missing_ok=True)


def lock_grid(grid_dir: Path) -> int:
    """Hold ``<grid_dir>/.lock`` (an flock the runs inherit): a second runner on the grid is refused while this one
    or any run it started (even one that outlived a killed runner) is alive."""
    fd = os.open(grid_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"{grid_dir} is in use: another grid runner, or train.py runs it started, still run there"
        ) from None
    return fd


class Backend(Protocol):
    """What the runner needs of a backend (``LocalBackend``, ``tdmpc2_trl.run.ray_grid.RayBackend``)."""

    capacity: int  # cells at once

    def launch(self, args: list[str], run_dir: Path, threads: int) -> Any:
        """Start ``python <args>`` for the cell in ``run_dir``; a handle for ``ended``."""

    def ended(self, timeout: float) -> list[tuple[Any, Ending]]:
        """The handles of the runs that ended since the last call, and how (waiting up to ``timeout`` s)."""

    def stop_all(self) -> None:
        """Ask every running cell to checkpoint and stop, once."""

    def close(self) -> None:
        """Release what the backend holds."""


class LocalBackend:
    """Cells as child processes of the runner, ``parallel`` at once; they inherit the grid's lock."""

    def __init__(self, parallel: int, lock_fd: int) -> None:
        self.capacity, self.lock_fd = parallel, lock_fd
        self.procs: list[subprocess.Popen] = []
        self.stopped: set[int] = set()  # pids that were sent SIGTERM

    def launch(self, args: list[str], run_dir: Path, threads: int) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "output.log", "ab") as log:
            proc = spawn(args, log, threads, pass_fds=(self.lock_fd,))
        self.procs.append(proc)
        return proc

    def ended(self, timeout: float) -> list[tuple[subprocess.Popen, Ending]]:
        time.sleep(timeout)
        done = [p for p in self.procs if p.poll() is not None]
        self.procs = [p for p in self.procs if p not in done]
        return [(p, Ending(p.returncode, "")) for p in done]

    def stop_all(self) -> None:
        """Send each run SIGTERM once (train.py checkpoints and exits 0)."""
        for proc in self.procs:
            if proc.pid not in self.stopped and proc.poll() is None:
                self.stopped.add(proc.pid)
                proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        pass


def check_backend(cfg: dict[str, Any]) -> None:
    """``backend`` and, for Ray, ``ray_gpus``, checked before anything is written."""
    if cfg.get("backend", "local") not in ("local", "ray"):
        raise ConfigError(f"backend={cfg['backend']!r} must be local or ray")
    gpus = cfg.get("ray_gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
        raise ConfigError(f"ray_gpus={gpus!r} must be a number >= 0")


def make_backend(cfg: dict[str, Any], grid: Grid, lock_fd: int) -> Backend:
    """The backend that runs the cells: ``local`` processes or ``ray`` tasks (``threads`` CPUs and ``ray_gpus``
    GPUs each, on the cluster at ``ray_address``, or a local Ray instance when it is null)."""
    if cfg.get("backend", "local") == "local":
        return LocalBackend(grid.parallel, lock_fd)
    from tdmpc2_trl.run.ray_grid import RayBackend

    address = cfg.get("ray_address")
    return RayBackend(None if address in (None, "") else str(address), grid.threads, cfg.get("ray_gpus", 0))


def begin(grid: Grid, cell: Cell, backend: Backend) -> Any:
    """Start a cell on the backend: afresh without a checkpoint (the rows of a run stopped before its first one
    are dropped), else resumed from its newest."""
    step = latest_step(cell)
    if step is None:
        clear_partial_logs(cell)
    handle = backend.launch(train_command(grid, cell, resume=step is not None)[1:], cell.run_dir, grid.threads)
    print(f"start {cell.name}: " + ("new run" if step is None else f"resume from step {step}"), flush=True)
    return handle


# ---------------------------------------------------------------- running the grid


class Runner:
    """Runs the pending cells on a backend, as many at once as it has room for; a signal stops new starts and is
    forwarded to the runs."""

    def __init__(self, grid: Grid, backend: Backend) -> None:
        self.grid, self.backend = grid, backend
        self.running: dict[Any, tuple[Cell, float]] = {}
        self.failed: list[Cell] = []
        self.signum = 0

    def on_signal(self, signum: int, frame) -> None:
        """First signal: remember it and ask every run to checkpoint and stop; later ones are ignored."""
        if not self.signum:
            self.signum = signum
            self.backend.stop_all()

    def run(self, cells: list[Cell]) -> None:
        pending = list(cells)
        while (pending and not self.signum) or self.running:
            while pending and not self.signum and len(self.running) < self.backend.capacity:
                cell = pending.pop(0)
                self.running[begin(self.grid, cell, self.backend)] = (cell, time.monotonic())
                if self.signum:  # the signal came while it started
                    self.backend.stop_all()
            for handle, ending in self.backend.ended(POLL_S):
                self.report(*self.running.pop(handle), ending)

    def report(self, cell: Cell, t0: float, ending: Ending) -> None:
        """Say how a run ended (and on which node, on a cluster)."""
        step = latest_step(cell)
        where = f" on node {ending.node}" if ending.node else ""
        done = finished(cell.run_dir, self.grid.steps)
        if done and (ending.returncode == 0 or self.signum):  # a signal may come after the final checkpoint
            print(f"done {cell.name}{where} in {time.monotonic() - t0:.0f} s", flush=True)
        elif self.signum and ending.returncode == 0:
            print(stopped_message(cell, step) + where, flush=True)
        elif self.signum and not ending.started:
            pass  # queued on the cluster when the signal came: it stays pending
        else:
            self.failed.append(cell)
            reason = ending.error or failure_reason(cell, ending.returncode)
            status = "" if ending.returncode is None else f" (exit {ending.returncode})"
            print(f"FAILED {cell.name}{where}{status}: {reason}", flush=True)


def stopped_message(cell: Cell, step: int | None) -> str:
    """What the runner says of a cell a signal stopped (one stopped while it set up has no checkpoint yet)."""
    if step is None:
        return f"stopped {cell.name} before its first checkpoint (the next run starts it afresh)"
    return f"stopped {cell.name} at step {step} (checkpointed)"


def failure_reason(cell: Cell, returncode: int | None) -> str:
    """What a failed run's line says: its last line of output, or, for a run killed by a signal (whose last lines
    are whatever its helpers printed as it died), the signal and where its log is."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (its log: {cell.run_dir / 'output.log'})"
    return _last_line(cell.run_dir / "output.log")


def _last_line(path: Path) -> str:
    """The run's last line of output that says something (Hydra's hint about HYDRA_FULL_ERROR does not)."""
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    lines = [line for line in lines if line.strip() and "HYDRA_FULL_ERROR" not in line]
    return lines[-1].strip() if lines else "(no output)"


def pending_cells(grid: Grid) -> list[Cell]:
    """The cells that are not finished (train.py's own rule: a checkpoint at ``steps`` whose final evaluation is
    logged) and have no owner; the others are announced and skipped."""
    pending = []
    for cell in grid.cells:
        if finished(cell.run_dir, grid.steps):
            print(f"skip {cell.name}: finished (step {latest_step(cell)})", flush=True)
        elif (owner := owner_of(cell.run_dir)) is not None:  # another train.py trains it (here or on shared storage)
            print(f"skip {cell.name}: running, {describe_owner(owner)}", flush=True)
        else:
            pending.append(cell)
    return pending


def write_results(grid: Grid) -> None:
    """The grid's plot and table (cells with evaluations only)."""
    runs = [c.run_dir for c in grid.cells if (c.run_dir / "eval.csv").is_file()]
    if not runs:
        print("no cell has evaluations yet: no plot", flush=True)
        return
    out = grid.grid_dir / "results.png"
    print(report(runs, out), end="")
    print(f"wrote {out} and {out.with_suffix('.md')}", flush=True)


def run_grid(cfg: dict[str, Any], passthrough: list[str]) -> int:
    """Run the grid; the exit status (0 done, 1 a run failed, 128 + signal number when stopped by a signal)."""
    grid = make_grid(cfg, passthrough)
    check_backend(cfg)
    record_grid(grid)
    lock_fd = lock_grid(grid.grid_dir)
    backend = make_backend(cfg, grid, lock_fd)
    runner = Runner(grid, backend)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, runner.on_signal)
    try:
        runner.run(pending_cells(grid))
    finally:
        backend.close()
    if runner.signum:
        unfinished = sum(1 for c in grid.cells if not finished(c.run_dir, grid.steps))
        print(
            f"interrupted by {signal.Signals(runner.signum).name}: {unfinished} of {len(grid.cells)} cells "
            f"unfinished; run the same command again to resume them",
            flush=True,
        )
        return 128 + runner.signum
    if cfg.get("plot", True):
        write_results(grid)
    if runner.failed:
        print(
            f"{len(runner.failed)} of {len(grid.cells)} runs failed (see output.log in their run directories)",
            file=sys.stderr,
        )
        return 1
    return 0


PASSTHROUGH: list[str] = []


@hydra.main(config_path="../configs", config_name="grid", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        status = run_grid(OmegaConf.to_container(cfg, resolve=True), PASSTHROUGH)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    except OSError as err:
        print(f"error: cannot write {err.filename or 'the grid directory'}: {err.strerror or err}", file=sys.stderr)
        status = 2
    sys.exit(status)


if __name__ == "__main__":
    own, PASSTHROUGH[:] = split_argv(sys.argv[1:])
    sys.argv[1:] = own
    main()
