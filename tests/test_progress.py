"""The progress display's time left: the work still to do at the measured rates of that work (run/progress.py)."""

from __future__ import annotations

import io
import random

import pytest

from tdmpc2_trl.run.progress import Estimator, ProgressDisplay, RunWork, format_seconds

# The default run as the issue measured it on a 2-core CPU (8m-h10, Pendulum-v1): 1000 random steps of 7 ms, the
# world-model and policy losses compiling for 72 s and 20 s at the first update, a burst of 1000 updates of 0.41 s,
# the planner compiling for 180 s at the first planned step, then ~0.6 s per planned step plus its update, and an
# evaluation every 5000 steps: 5 episodes of 200 steps planned in one batch, which on a CPU costs about 1.2 planned
# steps per env and step (measured with preset=quick on a 2-core CPU: 1880 s for 5 x 200 against 1.6 s per step).
DEFAULT = RunWork(
    steps=10_000, seed_steps=1_000, updates_per_step=1.0, eval_freq=5_000, episode_length=200, eval_episodes=5
)
RANDOM_STEP, UPDATE, PLANNED = 0.007, 0.41, 0.6
EVAL = 1.2 * 5 * 200 * PLANNED
COMPILE = {"loss": 72.0 + 20.0, "planner": 180.0, "eval planner": 150.0}


class SimulatedRun:
    """Drives an ``Estimator`` as ``Run.train`` does, on a fake clock, with each unit's time jittered ±25 %."""

    def __init__(self, work: RunWork, seed: int = 0) -> None:
        self.work, self.rng, self.now = work, random.Random(seed), 0.0
        self.est = Estimator(work)
        self.step = self.owed = self.eval_step = 0
        self.burst_done = False
        self.compiled: set[str] = set()

    def spend(self, seconds: float, graph: str | None = None) -> float:
        """Advance the clock by a jittered ``seconds`` (plus a compile the first time ``graph`` runs)."""
        took = seconds * self.rng.uniform(0.75, 1.25)
        if graph is not None and graph not in self.compiled:
            self.compiled.add(graph)
            self.est.compiling()
            took += COMPILE[graph]
        self.now += took
        return took

    def left(self) -> float | None:
        return self.est.left(self.step, self.owed, self.burst_done, self.eval_step)

    def env_step(self) -> None:
        """One collector batch of one env step, its updates and the evaluation that falls due."""
        w = self.work
        if self.step >= w.seed_steps:
            self.est.measure("planned", self.spend(PLANNED, "planner"))
        else:
            self.spend(RANDOM_STEP)  # never measured
        self.step += 1
        if self.step >= w.seed_steps:
            self.owed += w.seed_steps if not self.burst_done else 1
            self.burst_done = True
        while self.owed:
            self.est.measure("update", self.spend(UPDATE, "loss"))
            self.owed -= 1
        if w.eval_freq and self.step // w.eval_freq > self.eval_step // w.eval_freq:
            self.evaluate()

    def evaluate(self) -> None:
        self.est.measure("eval", self.spend(EVAL, "eval planner"))
        self.eval_step = self.step

    def run_to(self, step: int) -> None:
        while self.step < step:
            self.env_step()

    def finish(self) -> float:
        self.run_to(self.work.steps)
        if self.eval_step != self.step:
            self.evaluate()
        return self.now


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimate_at_ten_percent_of_training_is_within_30_percent_of_the_real_end(seed: int):
    run = SimulatedRun(DEFAULT, seed)
    tenth = DEFAULT.seed_steps + (DEFAULT.steps - DEFAULT.seed_steps) // 10
    run.run_to(tenth)
    estimate = run.left()
    now, end = run.now, run.finish()
    assert estimate is not None
    assert 0.7 <= estimate / (end - now) <= 1.3, (estimate, end - now)


def test_there_is_no_estimate_from_the_random_steps_and_a_rate_over_all_steps_would_be_far_off():
    run = SimulatedRun(DEFAULT)
    run.run_to(DEFAULT.seed_steps - 1)
    assert run.left() is None  # nothing but random steps measured: no promise
    naive = run.now / run.step * (DEFAULT.steps - run.step)  # tqdm's: the mean rate over the steps so far
    now, end = run.now, run.finish()
    assert naive < 0.01 * (end - now)  # about a minute for a run of hours: why random steps are never measured


def test_a_measurement_that_compiled_is_dropped():
    est = Estimator(DEFAULT)
    est.compiling()
    est.measure("update", 90.0)
    assert est.rate("update") is None
    est.measure("update", 0.4)
    est.measure("update", 0.6)
    assert est.rate("update") == pytest.approx(0.5)


def test_the_time_left_adds_each_kind_of_work_at_its_rate():
    est = Estimator(DEFAULT)
    est.measure("planned", 0.5)
    est.measure("update", 0.25)
    # step 2000, 3 updates owed, evaluations left at 5000 and 10000; an evaluation not measured: 5 episodes of 200
    # planned steps
    assert est.left(2_000, 3, True, 0) == pytest.approx(8_000 * 0.5 + (3 + 8_000) * 0.25 + 2 * 5 * 200 * 0.5)
    est.measure("eval", 30.0)
    assert est.left(2_000, 3, True, 0) == pytest.approx(8_000 * 0.5 + (3 + 8_000) * 0.25 + 2 * 30.0)
    # before the seed steps end: the burst of 1000 updates is still to come, and 9000 planned steps
    assert est.left(10, 0, False, 0) == pytest.approx(9_000 * 0.5 + (1_000 + 9_000) * 0.25 + 2 * 30.0)


@pytest.mark.parametrize(
    "steps,freq,eval_step,left",
    [
        (10_000, 5_000, 0, 2),
        (10_000, 5_000, 5_000, 1),
        (10_000, 5_000, 10_000, 0),
        (10_500, 5_000, 5_000, 2),  # 10000 and the final one at 10500
        (300, 0, 0, 1),  # only the final evaluation
    ],
)
def test_evaluations_left(steps: int, freq: int, eval_step: int, left: int):
    assert RunWork(steps, 100, 1.0, freq, 200).evals_left(eval_step) == left


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.2, 65, 3725)] == ["0:00", "1:00", "1:05", "1:02:05"]


def test_display_names_phases_and_compiles_and_keeps_compile_time_out_of_the_rates():
    lines: list[str] = []
    now = [100.0]
    display = ProgressDisplay(Estimator(DEFAULT), enabled=False, clock=lambda: now[0], write=lines.append)
    display.phase("initial updates", 1000, unit="update", line="initial burst: 1000 updates")
    display.compiling("the world-model loss", "up to ~3 min")
    now[0] += 72.4
    display.compiled("the world-model loss")
    display.est.measure("update", 72.8)  # the update that compiled
    display.est.measure("update", 0.4)
    assert lines == [
        "initial burst: 1000 updates",
        "compiling the world-model loss (up to ~3 min)…",
        "compiled the world-model loss in 72 s",
    ]
    assert display.est.rate("update") == pytest.approx(0.4)
    assert display.status(1_000, 10_000, float("nan"), None) == (
        "step 1000/10000, 0.40 s/update, time left: after the first planned steps"
    )
    assert display.status(1_500, 10_000, -812.34, 3725.0) == "step 1500/10000, ret -812.3, 0.40 s/update, 1:02:05 left"


def test_the_bar_shows_the_phase_its_own_counter_and_the_status():
    screen = io.StringIO()
    display = ProgressDisplay(Estimator(DEFAULT), enabled=True, write=lambda line: None, file=screen)
    display.phase("seed steps (random actions)", 1000)
    display.bar.mininterval, display.bar.miniters = 0, 1  # draw every update (tqdm waits 0.1 s between draws)
    display.advance(400, "step 400/10000, time left: after the first planned steps")
    display.phase("initial updates", 1000, unit="update")
    display.advance(1, "step 1000/10000")
    with display.activity("evaluating at step 1000 (5 episodes)"):
        shown = screen.getvalue()
    display.close()
    frames = shown.split("\r")
    assert any(
        f.startswith("seed steps (random actions): 400/1000 step |")
        and f.rstrip().endswith("step 400/10000, time left: after the first planned steps")
        for f in frames
    )
    assert any(f.startswith("initial updates: 0/1000 update |") for f in frames)  # its own counter, from 0
    assert frames[-1].startswith("evaluating at step 1000 (5 episodes): 1/1000 update |")


def test_an_evaluation_counts_its_own_steps_then_the_phase_counter_comes_back():
    screen = io.StringIO()
    display = ProgressDisplay(Estimator(DEFAULT), enabled=True, write=lambda line: None, file=screen)
    display.phase("training", 9000)
    display.bar.mininterval, display.bar.miniters, display.bar.dynamic_miniters = 0, 1, False
    display.advance(250, "step 1250/10000, 0.40 s/update, 1:02:05 left")
    with display.activity("evaluating at step 1250 (5 episodes)", total=200):
        display.compiling("the planner", "minutes")  # the evaluation's batch of envs compiles its own graph
        display.compiled("the planner")
        display.advance(3)  # three steps of the batched evaluation rollout; the status suffix stays
        during = screen.getvalue().split("\r")[-1]
    after = screen.getvalue().split("\r")[-1]
    display.close()
    assert during.startswith("evaluating at step 1250 (5 episodes): 3/200 step |")
    assert during.rstrip().endswith("step 1250/10000, 0.40 s/update, 1:02:05 left")
    assert after.startswith("training: 250/9000 step |")
