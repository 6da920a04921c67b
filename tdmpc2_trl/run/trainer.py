"""The training loop: env → Collector(policy=planner) → replay buffer → loss/optimisers, with evaluations, logs,
checkpoints and a clean stop on SIGINT/SIGTERM at any moment.

    from tdmpc2_trl.config.compose import load_config
    from tdmpc2_trl.run.trainer import train
    train(load_config("config", ["task=Pendulum-v1", "model=1m", "steps=2000"]), run_dir="runs/try")

``recipes/train.py`` is the command-line entry point around ``train``. The run directory holds config.yaml,
eval.csv (step,episode_reward), train.csv and checkpoints/ (README "Training").
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase

from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import ConfigError, TrainConfig
from tdmpc2_trl.data.replay_buffer import add, next_traj_offset, sample_batch
from tdmpc2_trl.envs.factory import task_info
from tdmpc2_trl.envs.video import video_path, write_video
from tdmpc2_trl.learning.update import NonFiniteUpdateError
from tdmpc2_trl.platform.checkpoint import (
    checkpoint_path,
    resolve_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from tdmpc2_trl.platform.compiling import compiling_deferred, on_compile
from tdmpc2_trl.platform.precision import precision_name
from tdmpc2_trl.run.collectors import make_collector, push_weights
from tdmpc2_trl.run.contract import resumed_config
from tdmpc2_trl.run.entry import exit_code
from tdmpc2_trl.run.evaluate import evaluate
from tdmpc2_trl.run.finetune import TASK_SET_KEY, load_pretrained, load_single_task_pretrained, task_set_state
from tdmpc2_trl.run.interrupts import Stop, phase, stop_if_signalled, uninterrupted
from tdmpc2_trl.run.make import (
    make_autocast_dtype,
    make_buffer,
    make_discount,
    make_env_factory,
    make_eval_env,
    make_logger,
    make_loss,
    make_planner,
    make_recorder,
    make_updater,
    make_world_model,
    resolve_device,
)
from tdmpc2_trl.run.multitask import joined_info, log_task_evals, multitask_setup
from tdmpc2_trl.run.ownership import RunOwnership
from tdmpc2_trl.run.progress import Estimator, ProgressDisplay, RunWork
from tdmpc2_trl.run.resolve import resolve

__all__ = ["Progress", "Run", "finished", "saved_progress", "train", "train_app"]

LEARNING_CURVE = "learning_curve.png"  # written at the end of a run (cfg.plot), the table next to it (.md)
# one torch.compile of a piece of the planner or of a loss, cold on a quiet 2-core CPU: 10-30 s (8m-h10: all of
# them 90 s, 8 s once cached; docs/performance.md, "Compiling")
COMPILE_TIME = "up to half a minute on a CPU the first time, seconds once cached"


@dataclass
class Progress:
    """Where a run stands. Saved in every checkpoint (``progress``), so that a resumed run does exactly the work
    that was left: the updates its collected steps earned, an evaluation that a signal cut short."""

    step: int = 0
    burst_done: bool = False
    owed_updates: int = 0  # updates earned by collected steps and not done yet (an interrupted burst)
    eval_step: int = 0  # the step of the last logged evaluation (0: none yet)
    ckpt_step: int = 0  # the step of the last checkpoint written or loaded
    dirty: bool = False  # something changed since that checkpoint

    def saved(self) -> dict[str, int]:
        return {"owed_updates": self.owed_updates, "eval_step": self.eval_step}

    @classmethod
    def restored(cls, state: dict[str, Any]) -> Progress:
        """The progress a checkpoint's state holds (older checkpoints without ``progress``: nothing pending)."""
        step, saved = int(state["step"]), state.get("progress", {})
        return cls(
            step=step,
            burst_done=bool(state["burst_done"]),
            owed_updates=int(saved.get("owed_updates", 0)),
            eval_step=int(saved.get("eval_step", step)),
            ckpt_step=step,
        )

    def work_left(self, steps: int) -> bool:
        """Whether a run of ``steps`` env steps has anything left to do from here: steps to collect, updates owed,
        or the evaluation of the current step not logged (a run stopped during its final evaluation). The one rule
        for "finished": a resumed run's (``Run.build``) and the grid runner's (``finished``)."""
        return self.step < steps or self.owed_updates > 0 or self.eval_step != self.step


class Run:
    """One training run: builds the TorchRL pieces, collects, updates, evaluates and checkpoints; on SIGINT or
    SIGTERM at any point it saves what is done (``stop``), on a failed write it stops with the file's name."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path) -> None:
        self.cfg, self.run_dir, self.p = cfg, Path(run_dir), Progress()
        self.collector = self.eval_env = self.logger = self.display = None
        self.metrics: dict[str, float] = {}

    def say(self, message: str) -> None:
        """A status line (above the progress bar once it is shown)."""
        if self.display is not None:
            self.display.write(message)
        else:
            print(message, flush=True)

    def build(self) -> bool:
        """Everything before the first env step; ``False`` when a resumed run has nothing left to do."""
        cfg = self.cfg
        self.device = device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        worker_threads = cfg.threads or 1  # collector workers: one thread each unless threads= says
        state = None
        if cfg.resume:  # the run's own settings (run/contract.py), before anything is built from them
            self.resumed_path, state = resolve_checkpoint(cfg.resume)
            cfg = resumed_config(cfg, state["config"], self.run_dir)
        tasks = ", ".join(cfg.tasks) if cfg.tasks else cfg.task
        self.say(
            f"building the env{'s' if cfg.tasks else ''}, the networks and the replay buffer for {tasks} "
            f"(model {cfg.model.name})…"
        )
        self.task_set, pretrained = multitask_setup(cfg) if cfg.tasks else (None, None)
        self.info = info = task_info(cfg.task, cfg.obs) if self.task_set is None else joined_info(self.task_set)
        # every null resolved once (run/resolve.py); config.yaml and the checkpoints hold these values
        self.cfg = cfg = resolve(cfg, info, device, multitask=self.task_set is not None)
        torch.manual_seed(cfg.seed)
        self.steps, self.seed_steps = cfg.steps, cfg.collector.seed_steps

        # --- the TorchRL pieces, all sharing one world model ---
        discount = make_discount(cfg.loss, info)  # a multitask model discounts each task with its own
        self.world_model = make_world_model(cfg.model, info, device, self.task_set)
        self.init_networks(pretrained)
        self.loss = make_loss(cfg.loss, self.world_model, discount)
        self.autocast_dtype = make_autocast_dtype(cfg.precision, device)
        self.updater = make_updater(cfg.optim, self.loss, cfg.loss.tau, self.autocast_dtype)
        self.planner = make_planner(
            cfg.planner, self.world_model, None, discount, self.autocast_dtype, horizon=cfg.model.horizon
        )
        self.envs = make_env_factory(cfg, info, self.planner, self.task_set)
        self.recorder = make_recorder(cfg.eval)
        self.eval_env = make_eval_env(self.envs, cfg.eval, self.recorder)
        self.buffer = make_buffer(cfg.buffer, cfg.model.horizon, self.run_dir / "buffer", device)
        if state is not None:
            self.restore(self.resumed_path, state)
        self.traj_offset = next_traj_offset(self.buffer)  # the new collector restarts its trajectory ids at 0
        if not self.p.work_left(self.steps):
            print(f"nothing to do: the run is already at step {self.p.step} >= steps={self.steps}")
            return False
        self.start_logs()
        if self.p.step < self.steps:  # collector.workers / collector.backend: collectors.py
            if cfg.collector.workers > 1 or cfg.collector.backend == "ray":
                self.say(f"starting {cfg.collector.workers} collector workers ({cfg.collector.backend})…")
            with compiling_deferred():  # the planner compiles after the seed steps, at its first planned step
                self.collector = make_collector(
                    self.envs,
                    cfg.collector,
                    self.planner,
                    total_frames=self.steps - self.p.step,
                    init_random_frames=max(0, self.seed_steps - self.p.step),
                    device=device,
                    threads=worker_threads,
                )
        return True

    def init_networks(self, pretrained: tuple | None) -> None:
        """``init_from``: the networks of a multitask checkpoint (``pretrained``, read by ``multitask_setup``) or
        of a single-task one (this project's or an official one), networks only."""
        if pretrained is not None:
            fresh = load_pretrained(self.world_model, *pretrained)
            self.say(f"networks from {self.cfg.init_from}" + (f"; new task embeddings for {fresh}" if fresh else ""))
        elif self.cfg.init_from:
            self.say(load_single_task_pretrained(self.world_model, self.cfg.init_from))

    def restore(self, path: Path, state: dict[str, Any]) -> None:
        restore_training_state(
            state, world_model=self.world_model, loss=self.loss, updater=self.updater, buffer=self.buffer
        )
        self.p = Progress.restored(state)
        print(f"resumed from {path} at step {self.p.step}")

    def start_logs(self) -> None:
        """config.yaml, the CSV logs (rows after the resumed step dropped: they are logged again) and the bar."""
        cfg = self.cfg
        self.logger = make_logger(cfg, self.run_dir)
        if cfg.resume:
            self.logger.rewind(self.p.step)
        tasks = f"tasks={','.join(cfg.tasks)}" if cfg.tasks else f"task={cfg.task}"
        print(
            f"run {self.run_dir}: {tasks} model={cfg.model.name} device={self.device} "
            f"precision={precision_name(self.autocast_dtype)} threads={torch.get_num_threads()}"
        )
        seed_left = max(0, self.seed_steps - self.p.step)
        work = RunWork(
            steps=self.steps,
            seed_steps=self.seed_steps,
            updates_per_step=self.updates_per_batch() / self.batch_steps(),
            eval_freq=cfg.eval.freq,
            episode_length=self.info.episode_length,
            eval_episodes=cfg.eval.episodes * max(1, len(cfg.tasks)),
        )
        self.display = ProgressDisplay(Estimator(work), enabled=cfg.progress)
        compiles = (
            f" (the update compiles at the first update, the planner at the first planned step: {COMPILE_TIME} each)"
            if self.compiles()
            else ""
        )
        line = (
            f"first {seed_left} env steps with random actions, then "
            f"{'the initial burst of updates and ' if not self.p.burst_done else ''}planning{compiles}"
        )
        if seed_left:
            self.display.phase("seed steps (random actions)", seed_left, line=line)
        else:
            self.display.write(line)
            self.enter_training()
        self.t_start, self.step_start, self.last_return = time.perf_counter(), self.p.step, float("nan")

    def compiles(self) -> bool:
        return self.cfg.planner.compile or self.cfg.optim.compile

    def batch_steps(self) -> int:
        """Env steps in one collector batch: every env of every worker (of every task)."""
        return self.cfg.num_envs * self.cfg.collector.workers * max(1, len(self.cfg.tasks))

    def updates_per_batch(self) -> int:
        return max(1, round(self.batch_steps() * self.cfg.optim.utd_ratio))

    def enter_training(self) -> None:
        """The phase of planned steps (each batch followed by its updates), counted from the current step."""
        left = self.steps - max(self.p.step, self.seed_steps)
        if left > 0 and self.display.name != "training":
            self.display.phase(
                "training",
                left,
                line=f"training: {left} planned env steps, "
                f"{self.updates_per_batch()} update(s) after every {self.batch_steps()}",
            )

    def left(self) -> float | None:
        """Seconds until the end of the run, from the work left at the rates measured so far."""
        p = self.p
        return self.display.est.left(p.step, p.owed_updates, p.burst_done, p.eval_step)

    def show(self, n: int = 0) -> None:
        """``n`` more units of the current phase, and the run's step, return, rates and time left."""
        self.display.advance(n, self.display.status(self.p.step, self.steps, self.last_return, self.left()))

    def train(self) -> None:
        """Updates left from a resumed run, the collection loop, then the final evaluation and checkpoint."""
        self.update()
        self.periodic()  # an evaluation that a signal cut short
        if self.collector is not None:
            waited = time.perf_counter()
            for data in self.collector:
                if self.p.step >= self.seed_steps:  # a planned batch: its env steps and its planner call
                    self.display.est.measure("planned", time.perf_counter() - waited, data.numel())
                with uninterrupted():
                    self.record(data)
                phase("seed" if self.p.step <= self.seed_steps else "loop")
                self.update()
                self.periodic()
                stop_if_signalled()
                waited = time.perf_counter()
        self.display.close()
        if self.p.eval_step != self.p.step:  # unless the last periodic evaluation was at this very step
            self.evaluate("final_eval")
        path = self.checkpoint() if self.p.dirty else checkpoint_path(self.run_dir, self.p.step)
        curve = f", learning curve {self.plot()}" if self.cfg.plot else ""
        print(f"done: {self.p.step} env steps, checkpoint {path}{curve}")

    def plot(self) -> Path | str:
        """``learning_curve.png`` of the run's evaluations (``results/plot.py``); a failure is a warning: the run
        itself is done and saved."""
        from tdmpc2_trl.results.plot import report  # matplotlib, only now

        out = self.run_dir / LEARNING_CURVE
        try:
            report([self.run_dir], out)
        except (ConfigError, OSError) as err:
            print(f"warning: no learning curve: {err}")
            return "(none)"
        return out

    def record(self, data: TensorDictBase) -> None:
        """A collector batch: into the buffer, the step counter, the updates it earns, its finished episodes."""
        p = self.p
        add(self.buffer, data, self.traj_offset)
        p.step += data.numel()
        p.dirty = True
        if not torch.isfinite(data["next", "observation"]).all():
            self.display.write(f"warning: the env returned a non-finite observation at step {p.step}")
        if p.step >= self.seed_steps:  # TD-MPC2's initial burst: as many updates as seed steps, then utd_ratio
            p.owed_updates += (
                self.seed_steps if not p.burst_done else max(1, round(data.numel() * self.cfg.optim.utd_ratio))
            )
            p.burst_done = True
        for episode_reward in finished_returns(data):
            self.last_return = episode_reward
            elapsed, left = time.perf_counter() - self.t_start, self.left()
            self.logger.log_train(
                p.step,
                {
                    "episode_reward": episode_reward,
                    "elapsed_s": elapsed,
                    "steps_per_s": (p.step - self.step_start) / elapsed,
                    **({"left_s": left} if left is not None else {}),
                    **_floats(self.metrics),
                },
            )
        self.show(data.numel())

    def update(self) -> None:
        """The updates owed, one at a time (a signal acts between two updates), then new weights to the workers."""
        total = self.p.owed_updates
        if not total:
            return
        burst = total > self.updates_per_batch()  # TD-MPC2's initial burst (or what an interrupted one left)
        if burst:
            self.display.phase(
                "initial updates",
                total,
                unit="update",
                line=f"initial burst: {total} updates on the seed steps before the first planned step",
            )
        for _ in range(total):
            phase("burst" if total > 1 else "update")
            started = time.perf_counter()
            with uninterrupted():
                self.metrics = self.updater(sample_batch(self.buffer)).to_dict()
                self.p.owed_updates -= 1
                self.p.dirty = True
            self.display.est.measure("update", time.perf_counter() - started)
            if burst:
                self.show(1)
        if burst or self.display.name != "training":
            self.enter_training()
        if self.collector is not None:
            push_weights(self.collector, self.planner)  # to the workers, if any

    def periodic(self) -> None:
        """The evaluation and the checkpoint that are due (every ``eval.freq`` / ``checkpoint_freq`` steps)."""
        if self.due(self.cfg.eval.freq, self.p.eval_step):
            self.evaluate("eval")
        if self.due(self.cfg.checkpoint_freq, self.p.ckpt_step):
            self.checkpoint()

    def due(self, freq: int, last: int) -> bool:
        """A periodic action (every ``freq`` steps, 0: never; last done at step ``last``) is due once the step
        reaches the next multiple of ``freq``."""
        return bool(freq) and self.p.step // freq > last // freq

    def evaluate(self, name: str) -> None:
        """``eval.episodes`` deterministic episodes; the video (if any) is written before the row is logged, so
        an evaluation cut short by a signal is simply done again by the resumed run."""
        phase(name)
        step = self.p.step
        write = self.display.write
        started = time.perf_counter()
        label = f"evaluating at step {step} ({self.cfg.eval.episodes} episodes)"
        with self.display.activity(label, total=self.info.episode_length):
            returns = evaluate(
                self.eval_env,
                self.planner,
                self.info.episode_length,
                self.recorder,
                warn=lambda msg: write(f"warning: {msg}, in the evaluation at step {step}"),
                on_step=self.display.advance,
            )
        self.display.est.measure("eval", time.perf_counter() - started)
        stop_if_signalled()  # in case a library caught the signal's exception mid-rollout
        mean = sum(returns) / len(returns)
        video = None
        if self.recorder is not None and self.recorder.frames:
            video = write_video(video_path(self.run_dir, step), self.recorder.frames)
        with uninterrupted():
            if self.task_set is not None:  # one row per task (eval.csv's task column)
                log_task_evals(self.logger, step, returns, self.task_set, self.cfg.eval.episodes, write)
            else:
                self.logger.log_eval(step, mean)
                write(f"eval @ {step}: mean return {mean:.1f} over {len(returns)} episodes")
            if video is not None:
                self.logger.log_video(step, video)
            self.p.eval_step, self.p.dirty = step, True

    def checkpoint(self) -> Path:
        """Write the whole training state at the current step (a signal during the write waits for it)."""
        p = self.p
        with uninterrupted():
            state = training_state(
                step=p.step,
                burst_done=p.burst_done,
                config=dataclasses.asdict(self.cfg),
                task=self.info.__dict__,
                world_model=self.world_model,
                loss=self.loss,
                updater=self.updater,
                buffer=self.buffer,
                progress=p.saved(),
            )
            if self.task_set is not None:
                state[TASK_SET_KEY] = task_set_state(self.task_set)
            path = save_checkpoint(checkpoint_path(self.run_dir, p.step), state)
            p.ckpt_step, p.dirty = p.step, False
        return path

    def stop(self) -> None:
        """After SIGINT/SIGTERM: save what is done (unless the newest checkpoint already holds it), say how to
        continue. Later signals wait: the process is stopping anyway."""
        Stop.deferred += 1
        if self.display is not None:
            self.display.close()
        name, step = Stop.name(), self.p.step
        if self.p.dirty:
            where = f"checkpoint saved to {self.checkpoint()}"
        elif self.p.ckpt_step:
            where = f"checkpoint {checkpoint_path(self.run_dir, step)} holds everything so far"
        else:
            print(
                f"interrupted during start-up ({name}), before the first env step: nothing to save yet; "
                f"run the same command again"
            )
            return
        print(f"interrupted at step {step} ({name}): {where}; continue with: {resume_command(self.run_dir)}")

    def compiling(self, what: str) -> None:
        """A graph starts compiling: named on screen, its time kept out of the measured rates."""
        if self.display is None:
            self.say(f"compiling {what} ({COMPILE_TIME})…")
        else:
            self.display.compiling(what, COMPILE_TIME)

    def compiled(self, what: str) -> None:
        if self.display is not None:
            self.display.compiled(what)

    def shutdown(self) -> None:
        """Stop the collector (and its envs or workers), close the evaluation env and the logs."""
        if self.collector is not None:
            self.collector.shutdown()
        if self.eval_env is not None and not self.eval_env.is_closed:
            self.eval_env.close()
        if self.logger is not None:
            self.logger.close()


def saved_progress(run_dir: str | Path) -> Progress | None:
    """The progress in the checkpoint that ``resume=<run_dir>`` would start from (the newest readable one, its
    tensors left on disk); None without a readable one (the run itself then says why)."""
    try:
        _, state = resolve_checkpoint(run_dir, networks_only=True)
    except ConfigError:
        return None
    return Progress.restored(state)


def finished(run_dir: str | Path, steps: int) -> bool:
    """Whether the run in ``run_dir`` is done at ``steps`` env steps: resuming it would find nothing to do."""
    progress = saved_progress(run_dir)
    return progress is not None and not progress.work_left(steps)


def train(cfg: TrainConfig, run_dir: str | Path) -> None:
    """Train as ``cfg`` says, writing to ``run_dir``. SIGINT/SIGTERM (with ``interrupts.install()``) at any moment
    checkpoints and returns; a non-finite update checkpoints and raises ``ConfigError``."""
    run = Run(cfg, run_dir)
    owner = RunOwnership(run_dir, say=run.say)  # one process per run directory (run/ownership.py)
    on_compile(run.compiling, run.compiled)
    Stop.deferred -= 1  # from here on a signal stops the run
    try:
        owner.acquire()
        stop_if_signalled()
        phase("startup")
        if run.build():
            run.train()
    except BaseException as err:
        if not Stop.signum:
            if isinstance(err, NonFiniteUpdateError):
                path = run.checkpoint()  # the skipped updates never reached the parameters: this checkpoint is sound
                raise ConfigError(f"stopped at step {run.p.step}: {err} (checkpoint {path})") from None
            raise
        run.stop()  # Interrupted, or whatever a library raised while the signal cut into it
    finally:
        Stop.deferred += 1
        on_compile(None)
        run.shutdown()
        owner.release()


def train_app(cfg: DictConfig | TrainConfig, run_dir: str | Path) -> int:
    """``train`` for a command line: 0 when done or stopped by a signal; 2 after a one-line error on stderr (a bad
    setting found while building, a full disk: the file's name)."""
    cfg = cfg if isinstance(cfg, TrainConfig) else to_dataclass(cfg, TrainConfig)
    return exit_code(lambda: train(cfg, run_dir))


def resume_command(run_dir: Path) -> str:
    """This process's command line with ``resume=<run_dir>`` instead of its run directory settings."""
    kept = [a for a in sys.argv[1:] if not a.startswith(("resume=", "hydra.run.dir="))]
    return shlex.join(["python", sys.argv[0], *kept, f"resume={run_dir}"])


def finished_returns(data: TensorDictBase) -> list[float]:
    """Returns of the episodes that ended in this batch (RewardSum's ``episode_reward`` at ``done``)."""
    done = data["next", "done"].reshape(-1)
    if not done.any():
        return []
    return data["next", "episode_reward"].reshape(-1)[done].tolist()


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or torch.is_tensor(v)}
