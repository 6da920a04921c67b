"""Offline training: a multitask agent from a dataset on disk (``tdmpc2_trl.data.offline_dataset``), with the same
loss, update and planner as online training, evaluated online on each task every ``eval.freq`` updates.

    from tdmpc2_trl.config.compose import load_config
    from tdmpc2_trl.run.offline import train_offline
    train_offline(load_config("offline", ["dataset=DIR", "steps=20000"]), run_dir="runs/offline/try")

The run directory holds config.yaml, eval.csv (``step,episode_reward,task``: step = updates), train.csv and
checkpoints/ (networks, target Q, both Adams, RNG, the update count, the task set). SIGINT/SIGTERM checkpoint and
return; ``resume=RUN_DIR`` continues.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import ConfigError, OfflineConfig
from tdmpc2_trl.data.offline_dataset import check_tasks, load_dataset, make_offline_buffer
from tdmpc2_trl.data.replay_buffer import sample_batch
from tdmpc2_trl.envs.multitask import MultitaskEnvFactory
from tdmpc2_trl.platform.checkpoint import (
    checkpoint_path,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tdmpc2_trl.platform.compiling import on_compile
from tdmpc2_trl.run import resolve
from tdmpc2_trl.run.entry import exit_code
from tdmpc2_trl.run.evaluate import evaluate
from tdmpc2_trl.run.finetune import TASK_SET_KEY, checkpoint_task_set, task_set_state
from tdmpc2_trl.run.interrupts import Interrupted, Stop, stop_if_signalled, uninterrupted
from tdmpc2_trl.run.make import (
    make_autocast_dtype,
    make_logger,
    make_loss,
    make_planner,
    make_updater,
    make_world_model,
    resolve_device,
)
from tdmpc2_trl.run.multitask import joined_info, log_task_evals, padded_info
from tdmpc2_trl.run.ownership import RunOwnership
from tdmpc2_trl.run.trainer import COMPILE_TIME

__all__ = ["train_offline", "train_offline_app"]


class OfflineRun:
    """The pieces of an offline run and its update count."""

    def __init__(self, cfg: OfflineConfig, run_dir: str | Path) -> None:
        self.cfg, self.run_dir, self.step = cfg, Path(run_dir), 0
        self.eval_env = self.logger = None

    def build(self) -> None:
        cfg = self.cfg
        self.device = device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.task_set, data = load_dataset(cfg.dataset, cfg.model.task_dim)
        if cfg.tasks:
            check_tasks(self.task_set, cfg.tasks)
        print(
            f"dataset {cfg.dataset}: {len(data):,} transitions of {len(self.task_set)} task(s) {self.task_set.names}",
            flush=True,
        )
        episodic = bool(data["next", "terminated"].any())
        self.buffer = make_offline_buffer(
            data,
            batch_size=cfg.buffer.batch_size,
            horizon=cfg.model.horizon,
            episode_end_slices=resolve.episode_end_slices(cfg.buffer.episode_end_slices, episodic),
            device=device,
        )
        info = joined_info(self.task_set) if cfg.eval.freq else None  # the tasks' envs: only to evaluate
        self.world_model = make_world_model(cfg.model, padded_info(self.task_set, 0, episodic), device, self.task_set)
        self.loss = make_loss(cfg.loss, self.world_model, 0.99)  # a multitask model uses each task's discount
        self.autocast_dtype = make_autocast_dtype(cfg.precision, device)
        self.updater = make_updater(cfg.optim, self.loss, cfg.loss.tau, self.autocast_dtype)
        self.planner = make_planner(
            cfg.planner, self.world_model, None, 0.99, self.autocast_dtype, horizon=cfg.model.horizon
        )
        if info is not None:
            self.episode_length = info.episode_length
            # the envs step on the CPU; the rollout moves their observations to the planner's device
            self.eval_env = MultitaskEnvFactory(
                self.task_set, cfg.seed + 10_000, cfg.eval.episodes, "cpu", (self.planner.primer("cpu"),)
            )()
        if cfg.resume:
            self.restore(cfg.resume)
        self.logger = make_logger(cfg, self.run_dir)
        self.logger.rewind(self.step)

    def restore(self, resume: str) -> None:
        path, state = resolve_checkpoint(resume)
        if checkpoint_task_set(state, str(path)).names != self.task_set.names:
            raise ConfigError(f"{path} was trained on other tasks than the dataset's {self.task_set.names}")
        self.world_model.load_state_dict(state["world_model"])
        self.loss.load_state_dict(state["loss"])
        self.updater.load_state_dict(state["updater"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        print(f"resumed from {path} at update {self.step}")

    def train(self) -> None:
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, unit="update", dynamic_ncols=True, disable=not cfg.progress)
        start, first = time.perf_counter(), self.step
        while self.step < cfg.steps:
            with uninterrupted():
                metrics = self.updater(sample_batch(self.buffer))
                self.step += 1
            bar.update()
            if self.step % 1000 == 0 or self.step == cfg.steps:
                rate = (self.step - first) / (time.perf_counter() - start)
                self.logger.log_train(self.step, {"updates_per_s": rate, **{k: float(v) for k, v in metrics.items()}})
            if cfg.eval.freq and (self.step % cfg.eval.freq == 0 or self.step == cfg.steps):
                self.evaluate(bar.write)
            if cfg.checkpoint_freq and self.step % cfg.checkpoint_freq == 0:
                self.checkpoint()
            stop_if_signalled()
        bar.close()
        print(f"done: {self.step} updates, checkpoint {self.checkpoint()}")

    def evaluate(self, write) -> None:
        returns = evaluate(self.eval_env, self.planner, self.episode_length)
        with uninterrupted():
            log_task_evals(self.logger, self.step, returns, self.task_set, self.cfg.eval.episodes, write, " updates")

    def checkpoint(self) -> Path:
        with uninterrupted():
            state = {
                "step": self.step,
                "config": dataclasses.asdict(self.cfg),
                "world_model": self.world_model.state_dict(),
                "loss": self.loss.state_dict(),
                "updater": self.updater.state_dict(),
                "rng": rng_state(),
                TASK_SET_KEY: task_set_state(self.task_set),
            }
            return save_checkpoint(checkpoint_path(self.run_dir, self.step), state)

    def shutdown(self) -> None:
        if self.eval_env is not None and not self.eval_env.is_closed:
            self.eval_env.close()
        if self.logger is not None:
            self.logger.close()


def train_offline(cfg: OfflineConfig, run_dir: str | Path) -> None:
    """Train from ``cfg.dataset``; a signal (with ``interrupts.install()``) checkpoints and returns."""
    run = OfflineRun(cfg, run_dir)
    owner = RunOwnership(run_dir)  # one process per run directory, as for online runs
    on_compile(lambda what: print(f"compiling {what} ({COMPILE_TIME})…", flush=True))
    Stop.deferred -= 1
    try:
        owner.acquire()
        stop_if_signalled()
        run.build()
        run.train()
    except Interrupted:
        Stop.deferred += 1  # the signal is handled here: the checkpoint below must not raise it again
        if run.logger is not None:
            print(f"interrupted at update {run.step}: checkpoint {run.checkpoint()}; continue with resume={run_dir}")
    finally:
        Stop.deferred += 1
        on_compile(None)
        run.shutdown()
        owner.release()


def train_offline_app(cfg: DictConfig | OfflineConfig, run_dir: str | Path) -> int:
    """``train_offline`` for a command line: 0 when done or stopped by a signal, 2 after a one-line error."""
    cfg = cfg if isinstance(cfg, OfflineConfig) else to_dataclass(cfg, OfflineConfig)
    return exit_code(lambda: train_offline(cfg, run_dir))
