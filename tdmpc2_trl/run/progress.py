"""What a training run shows while it works: the phase it is in (seed steps, compiling, the initial burst of updates,
training, evaluation) with that phase's own counter, and the time left.

The time left is the work still to do, each kind at the measured rate of that kind of work:

    planned steps left × s/planned step + updates left × s/update + evaluations left × s/evaluation

A random seed step costs milliseconds and a planned step with its update about a second, so a rate over all steps
(tqdm's) promises a three-hour run will end in half a minute. The random steps are therefore never measured, and a
unit of work that contained a compile is not measured either (``Estimator.compiling``). Until a planned step and an
update have been measured there is no estimate ("time left: after the first planned steps"); until an evaluation
has been measured one costs an episode of planned steps per evaluation episode (its envs are planned for in one
batched call, which on a CPU costs about as much per env as a planned step does).

    est = Estimator(RunWork(steps=10_000, seed_steps=1_000, updates_per_step=1.0, eval_freq=5_000,
                            episode_length=200, eval_episodes=5))
    est.measure("update", 0.41)        # seconds of one update
    est.measure("planned", 0.20)       # seconds of one planned env step (its updates not included)
    est.left(step=1_100, owed_updates=0, burst_done=True, eval_step=0)   # seconds
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from tqdm import tqdm

__all__ = ["Estimator", "ProgressDisplay", "RunWork", "format_seconds"]

KINDS = ("planned", "update", "eval")
WINDOW = 200  # units averaged per kind: recent enough to follow a change of speed, long enough to smooth noise


@dataclass(frozen=True)
class RunWork:
    """The whole run's work: ``steps`` env steps, the first ``seed_steps`` random, then a burst of ``seed_steps``
    updates and ``updates_per_step`` updates per planned step; an evaluation every ``eval_freq`` steps (0: none) and
    a final one unless the last step is a multiple of ``eval_freq``."""

    steps: int
    seed_steps: int
    updates_per_step: float
    eval_freq: int
    episode_length: int
    eval_episodes: int = 1

    def planned_left(self, step: int) -> int:
        return max(0, self.steps - max(step, self.seed_steps))

    def updates_left(self, step: int, owed_updates: int, burst_done: bool) -> float:
        burst = 0 if burst_done else self.seed_steps
        return owed_updates + burst + self.planned_left(step) * self.updates_per_step

    def evals_left(self, eval_step: int) -> int:
        if eval_step >= self.steps:
            return 0
        periodic = self.steps // self.eval_freq - eval_step // self.eval_freq if self.eval_freq else 0
        final = 1 if not self.eval_freq or self.steps % self.eval_freq else 0
        return periodic + final


class Estimator:
    """Seconds per unit of each kind of work (the mean of the last ``WINDOW`` measured units) and the time left."""

    def __init__(self, work: RunWork) -> None:
        self.work = work
        self.samples: dict[str, deque[float]] = {kind: deque(maxlen=WINDOW) for kind in KINDS}
        self.tainted = False

    def compiling(self) -> None:
        """The unit of work in progress compiles a graph: its time says nothing about the next ones."""
        self.tainted = True

    def measure(self, kind: str, seconds: float, units: int = 1) -> None:
        """``units`` units of ``kind`` (planned | update | eval) took ``seconds`` (dropped if they compiled)."""
        if self.tainted:
            self.tainted = False
            return
        if units > 0:
            self.samples[kind].append(seconds / units)

    def rate(self, kind: str) -> float | None:
        """Seconds per unit of ``kind``; an evaluation not yet measured costs an episode of planned steps for each of
        its episodes."""
        samples = self.samples[kind]
        if samples:
            return sum(samples) / len(samples)
        if kind == "eval" and self.samples["planned"]:
            return self.work.episode_length * self.work.eval_episodes * self.rate("planned")
        return None

    def left(self, step: int, owed_updates: int, burst_done: bool, eval_step: int) -> float | None:
        """Seconds until the run ends; ``None`` until a planned step and an update have been measured."""
        w = self.work
        planned, update, evaluation = self.rate("planned"), self.rate("update"), self.rate("eval")
        planned_left = w.planned_left(step)
        updates_left = w.updates_left(step, owed_updates, burst_done)
        if (planned_left and planned is None) or (updates_left and update is None):
            return None
        return (
            (planned or 0.0) * planned_left
            + (update or 0.0) * updates_left
            + (evaluation or 0.0) * w.evals_left(eval_step)
        )


def format_seconds(seconds: float) -> str:
    """``3725`` → ``"1:02:05"``, ``65`` → ``"1:05"``."""
    seconds = int(math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressDisplay:
    """One bar for the current phase (its own counter) whose suffix holds the run's step, the last episode return,
    the measured rates and the time left; phase changes, compiles and evaluations are lines above it.

    ``enabled=False`` (``progress=false``: logs, CI) keeps the lines and drops the bar."""

    def __init__(
        self,
        estimator: Estimator,
        enabled: bool,
        clock: Callable[[], float] = time.perf_counter,
        write: Callable[[str], None] | None = None,
        file: IO[str] | None = None,
    ) -> None:
        self.est, self.enabled, self.clock = estimator, enabled, clock
        self._write, self.file = write, file  # file: the bar's stream (None: tqdm's, stderr)
        self.bar: tqdm | None = None
        self.name = ""
        self.compile_started: float | None = None
        self.label: str | None = None  # the running activity's label (an evaluation), if any

    def write(self, message: str) -> None:
        """A line above the bar."""
        if self._write is not None:
            self._write(message)
        elif self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def phase(self, name: str, total: int | None = None, unit: str = "step", line: str | None = None) -> None:
        """Start phase ``name`` with a counter of ``total`` ``unit``s; ``line``: what to print about it."""
        self.name = name
        if line:
            self.write(line)
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=total,
                unit=unit,
                desc=name,
                dynamic_ncols=True,
                leave=False,
                file=self.file,
                bar_format="{desc}: {n_fmt}/{total_fmt} {unit} |{bar:16}| {elapsed}{postfix}",
            )
        else:  # the new name and unit first: reset() draws the bar
            self.bar.set_description_str(name, refresh=False)
            self.bar.unit = unit
            self.bar.reset(total=total)

    def advance(self, n: int = 1, status: str | None = None) -> None:
        """``n`` more units done in this phase; ``status``: the run's step, return, and so on (``None``: as it was)."""
        if self.bar is not None:
            if status is not None:
                self.bar.set_postfix_str(status, refresh=False)
            if n:
                self.bar.update(n)
            else:
                self.bar.refresh()

    @contextlib.contextmanager
    def activity(self, description: str, total: int | None = None, unit: str = "step") -> Iterator[None]:
        """The bar's label says ``description`` while it lasts (an evaluation, a compile), then the phase's again;
        with ``total``, the bar counts the activity's own ``unit``s meanwhile (``advance``), then the phase's."""
        bar = self.bar
        saved = None if bar is None else (bar.n, bar.total, bar.unit, bar.start_t)
        self.label = description  # what a compile inside the activity gives the bar back (``compiled``)
        if bar is not None:
            bar.set_description_str(description, refresh=total is None)
            if total is not None:
                bar.unit = unit
                bar.reset(total=total)
        try:
            yield
        finally:
            self.label = None
            if bar is not None and saved is not None:
                bar.set_description_str(self.name, refresh=False)
                if total is not None:  # the phase's counter, unit and clock as they were
                    n, phase_total, bar.unit, start = saved
                    bar.reset(total=phase_total)
                    bar.n, bar.start_t = n, start
                bar.refresh()

    def compiling(self, what: str, expected: str) -> None:
        """A graph starts compiling (``runtime.compiling.on_compile``): say so, keep its time out of the rates."""
        self.est.compiling()
        self.compile_started = self.clock()
        self.write(f"compiling {what} ({expected})…")
        if self.bar is not None:
            self.bar.set_description_str(f"compiling {what}")

    def compiled(self, what: str) -> None:
        """The graph announced by ``compiling`` ran for the first time."""
        if self.compile_started is not None:
            self.write(f"compiled {what} in {self.clock() - self.compile_started:.0f} s")
            self.compile_started = None
        if self.bar is not None:
            self.bar.set_description_str(self.label or self.name)

    def status(self, step: int, steps: int, last_return: float, left: float | None) -> str:
        """The suffix: the run's step, the last episode's return, the rates and the time left."""
        parts = [f"step {step}/{steps}"]
        if not math.isnan(last_return):
            parts.append(f"ret {last_return:.1f}")
        planned, update = self.est.rate("planned"), self.est.rate("update")
        if planned is not None:
            parts.append(f"{planned:.2f} s/planned step")
        if update is not None:
            parts.append(f"{update:.2f} s/update")
        parts.append(f"{format_seconds(left)} left" if left is not None else "time left: after the first planned steps")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
