"""Train TD-MPC2 from TorchRL parts: env → Collector(policy=planner) → replay buffer → loss/optimisers.

    python recipes/train.py                                  # seed networks on Pendulum-v1
    python recipes/train.py task=cartpole-swingup model=5m steps=100000 num_envs=4
    python recipes/train.py resume=runs/Pendulum-v1/seed/seed1/2026-01-01_00-00-00

The run directory holds config.yaml (resolved), eval.csv (step,episode_reward), train.csv and checkpoints/.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, checkpoint what is done, exit 0. A ``BaseException`` (like ``KeyboardInterrupt``),
    so that no library's ``except Exception`` (e.g. the planner's compile fallback) swallows it."""


class _Stop:
    """The first SIGINT/SIGTERM received and how many running blocks must finish before it acts. Signals that
    arrive while the modules below import and Hydra composes the config wait until ``train`` takes over."""

    signum: int = 0
    deferred: int = 1


def _on_signal(signum: int, frame) -> None:
    """Record the signal; raise ``Interrupted`` now unless a block that must finish is running."""
    first = not _Stop.signum
    _Stop.signum = _Stop.signum or signum
    if first and not _Stop.deferred:
        raise Interrupted(signal.Signals(signum).name)


signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGTERM, _on_signal)


def _drop_interrupted(default_hook):
    """An ``Interrupted`` raised while a finaliser or weakref callback ran (e.g. inside torch.compile's caches) is
    dropped by Python with an "Exception ignored" traceback on stderr. Silence only that case: ``_Stop.signum``
    still holds the signal, and ``stop_if_signalled`` acts on it at the next check."""
    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            default_hook(unraisable)
    return hook


sys.unraisablehook = _drop_interrupted(sys.unraisablehook)


def stop_if_signalled() -> None:
    """Raise ``Interrupted`` for a signal received earlier (during a deferred block, or swallowed by a library)."""
    if _Stop.signum and not _Stop.deferred:
        raise Interrupted(signal.Signals(_Stop.signum).name)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that a signal does not cut in half (one update, a batch's bookkeeping, a checkpoint write): the
    signal acts when the block ends."""
    _Stop.deferred += 1
    try:
        yield
    finally:
        _Stop.deferred -= 1
    stop_if_signalled()


def phase(name: str) -> None:
    """Announce a phase of the run as the audit event ``tdmpc2_trl.phase`` (the fault-injection tests hook it)."""
    sys.audit("tdmpc2_trl.phase", name)


import shlex  # noqa: E402  (the signal handlers above are installed before the slow imports)
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import tdmpc2_trl  # noqa: E402,F401  (before torch: its OpenMP spin setting, tdmpc2_trl/__init__.py)
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tensordict import TensorDictBase  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tdmpc2_trl.checkpoint import (  # noqa: E402
    atomic_file, checkpoint_path, named_os_error, os_error_line, resolve_checkpoint, restore_training_state,
    save_checkpoint, training_state,
)
from tdmpc2_trl.collectors import check_collector_config, make_collector, push_weights  # noqa: E402
from tdmpc2_trl.config import ConfigError  # noqa: E402
from tdmpc2_trl.data import add, make_replay_buffer, next_traj_offset, sample_batch  # noqa: E402
from tdmpc2_trl.envs import make_env, task_info  # noqa: E402
from tdmpc2_trl.evaluate import evaluate  # noqa: E402
from tdmpc2_trl.factory import (  # noqa: E402
    make_autocast_dtype, make_discount, make_loss, make_planner, make_updater, make_world_model, resolve_device, to_dict,
)
from tdmpc2_trl.precision import precision_name  # noqa: E402
from tdmpc2_trl.runlog import RunLogger  # noqa: E402
from tdmpc2_trl.update import NonFiniteUpdateError  # noqa: E402
from tdmpc2_trl.video import EpisodeRecorder, video_path, write_video  # noqa: E402


def _run_dir_for(resume: str | None, default: str) -> str:
    """Hydra's run dir: a resumed run continues in its own directory."""
    if not resume:
        return default
    path = Path(resume)
    return str(path.parent.parent if path.is_file() else path)


OmegaConf.register_new_resolver("run_dir_for", _run_dir_for, replace=True)


def _number(c: dict[str, Any], key: str, kind: type) -> int | float:
    value = c
    for part in key.split("."):
        value = value[part]
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} must be {'an integer' if kind is int else 'a number'}") from None


def check_config(c: dict[str, Any]) -> None:
    for key in ("steps", "num_envs", "batch_size", "horizon", "eval_episodes", "planner.num_samples",
                "planner.num_elites", "planner.iterations"):
        if (value := _number(c, key, int)) < 1:
            raise ConfigError(f"{key}={value} must be a positive integer")
    for key in ("eval_freq", "checkpoint_freq", "seed", "planner.num_pi_trajs"):
        if (value := _number(c, key, int)) < 0:
            raise ConfigError(f"{key}={value} must be >= 0 (0 disables the periodic action)"
                              if key.endswith("freq") else f"{key} must be >= 0")
    for key in ("lr", "utd_ratio", "tau", "grad_clip_norm", "rho", "planner.temperature"):
        if not (value := _number(c, key, float)) > 0:
            raise ConfigError(f"{key}={value} must be > 0")
    for key in ("seed_steps", "buffer_size", "discount", "threads"):
        if c.get(key) is not None:
            _number(c, key, float if key == "discount" else int)
    if c["buffer_storage"] not in ("memory", "memmap"):
        raise ConfigError(f"buffer_storage={c['buffer_storage']!r} must be 'memory' or 'memmap'")
    check_collector_config(c)


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


class Run:
    """One training run: builds the TorchRL pieces, collects, updates, evaluates and checkpoints; on SIGINT or
    SIGTERM at any point it saves what is done (``stop``), on a failed write it stops with the file's name."""

    def __init__(self, c: dict[str, Any]) -> None:
        self.c, self.run_dir, self.p = c, Path(c["run_dir"]), Progress()
        self.collector = self.env = self.eval_env = self.logger = self.bar = None
        self.metrics: dict[str, float] = {}

    def build(self) -> bool:
        """Everything before the first env step; ``False`` when a resumed run has nothing left to do."""
        c = self.c
        self.device = device = resolve_device(c["device"])
        if c["threads"]:
            torch.set_num_threads(int(c["threads"]))
        self.info = info = task_info(c["task"], c.get("obs", "state"))
        torch.manual_seed(c["seed"])
        self.steps = int(c["steps"])
        self.seed_steps = int(c["seed_steps"] or max(1000, 5 * info.episode_length))
        capacity = int(c["buffer_size"] or min(1_000_000, self.steps))

        # --- the TorchRL pieces, all sharing one world model ---
        discount = make_discount(c, info)
        self.world_model = make_world_model(c, info, device)
        self.loss = make_loss(c, self.world_model, discount)
        autocast_dtype = make_autocast_dtype(c, device)
        self.updater = make_updater(c, self.loss, autocast_dtype)
        self.env = make_env(c["task"], seed=c["seed"], num_envs=int(c["num_envs"]), device=device, obs=info.obs)
        self.planner = make_planner(c, self.world_model, self.env.action_spec_unbatched, discount, autocast_dtype)
        self.env.append_transform(self.planner.primer())
        self.recorder = EpisodeRecorder(int(c["video_size"])) if c.get("save_video") else None  # videos/ of evals
        self.eval_env = make_env(c["task"], seed=c["seed"] + 10_000, num_envs=int(c["eval_episodes"]), device=device,
                                 transforms=[self.planner.primer(), *([self.recorder] if self.recorder else [])],
                                 obs=info.obs, render=self.recorder is not None)
        self.buffer = make_replay_buffer(capacity=capacity, batch_size=int(c["batch_size"]),
                                         horizon=int(c["horizon"]), storage=c["buffer_storage"],
                                         scratch_dir=self.run_dir / "buffer", device=device)
        if c["resume"]:
            self.restore(c["resume"])
        self.traj_offset = next_traj_offset(self.buffer)  # the new collector restarts its trajectory ids at 0
        if self.p.step >= self.steps and not self.pending_work():
            print(f"nothing to do: the run is already at step {self.p.step} >= steps={self.steps}")
            return False
        self.start_logs(autocast_dtype)
        if self.p.step < self.steps:  # collector.workers / collector.backend: collectors.py
            self.collector = make_collector(c, self.env, self.planner, total_frames=self.steps - self.p.step,
                                            init_random_frames=max(0, self.seed_steps - self.p.step), device=device)
        return True

    def restore(self, resume: str) -> None:
        path, state = resolve_checkpoint(resume)
        check_compatible(state, self.c)
        step, burst_done = restore_training_state(state, world_model=self.world_model, loss=self.loss,
                                                  updater=self.updater, buffer=self.buffer)
        saved = state.get("progress", {})
        self.p = Progress(step=step, burst_done=burst_done, owed_updates=int(saved.get("owed_updates", 0)),
                          eval_step=int(saved.get("eval_step", step)), ckpt_step=step)
        print(f"resumed from {path} at step {step}")

    def pending_work(self) -> bool:
        """Updates owed or the final evaluation not logged (a run stopped during its last steps)."""
        return self.p.owed_updates > 0 or self.p.eval_step != self.p.step

    def start_logs(self, autocast_dtype) -> None:
        """config.yaml, the CSV logs (rows after the resumed step dropped: they are logged again) and the bar."""
        c = self.c
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise named_os_error(err, self.run_dir) from None
        with atomic_file(self.run_dir / "config.yaml", "w") as f:
            f.write(OmegaConf.to_yaml(OmegaConf.create(c)))
        self.logger = RunLogger(self.run_dir, c, c["logger"])
        if c["resume"]:
            self.logger.rewind(self.p.step)
        print(f"run {self.run_dir}: task={c['task']} model={c['model']['name']} device={self.device} "
              f"precision={precision_name(autocast_dtype)} threads={torch.get_num_threads()}")
        self.bar = tqdm(total=self.steps, initial=self.p.step, unit="step", dynamic_ncols=True,
                        disable=not c["progress"])
        self.t_start, self.step_start, self.last_return = time.perf_counter(), self.p.step, float("nan")

    def train(self) -> None:
        """Updates left from a resumed run, the collection loop, then the final evaluation and checkpoint."""
        self.update()
        self.periodic()  # an evaluation that a signal cut short
        if self.collector is not None:
            for data in self.collector:
                with uninterrupted():
                    self.record(data)
                phase("seed" if self.p.step <= self.seed_steps else "loop")
                self.update()
                self.periodic()
                stop_if_signalled()
        self.bar.close()
        if self.p.eval_step != self.p.step:  # unless the last periodic evaluation was at this very step
            self.evaluate("final_eval")
        path = self.checkpoint() if self.p.dirty else checkpoint_path(self.run_dir, self.p.step)
        print(f"done: {self.p.step} env steps, checkpoint {path}")

    def record(self, data: TensorDictBase) -> None:
        """A collector batch: into the buffer, the step counter, the updates it earns, its finished episodes."""
        p = self.p
        add(self.buffer, data, self.traj_offset)
        p.step += data.numel()
        p.dirty = True
        if not torch.isfinite(data["next", "observation"]).all():
            self.bar.write(f"warning: the env returned a non-finite observation at step {p.step}")
        if p.step >= self.seed_steps:  # TD-MPC2's initial burst: as many updates as seed steps, then utd_ratio
            p.owed_updates += self.seed_steps if not p.burst_done else max(1, round(data.numel() * self.c["utd_ratio"]))
            p.burst_done = True
        for episode_reward in finished_returns(data):
            self.last_return = episode_reward
            elapsed = time.perf_counter() - self.t_start
            self.logger.log_train(p.step, {"episode_reward": episode_reward, "elapsed_s": elapsed,
                                           "steps_per_s": (p.step - self.step_start) / elapsed,
                                           **_floats(self.metrics)})
        self.bar.update(data.numel())
        self.bar.set_postfix(ret=f"{self.last_return:.1f}", refresh=False)

    def update(self) -> None:
        """The updates owed, one at a time (a signal acts between two updates), then new weights to the workers."""
        total = self.p.owed_updates
        if not total:
            return
        for i in range(total):
            phase("burst" if total > 1 else "update")
            with uninterrupted():
                self.metrics = self.updater(sample_batch(self.buffer)).to_dict()
                self.p.owed_updates -= 1
                self.p.dirty = True
            if total > 1 and i % 10 == 0:  # TD-MPC2's initial burst: show that it is moving
                self.bar.set_postfix_str(f"initial updates {i}/{total}")
        if self.collector is not None:
            push_weights(self.collector, self.planner)  # to the workers, if any

    def periodic(self) -> None:
        """The evaluation and the checkpoint that are due (every ``eval_freq`` / ``checkpoint_freq`` steps)."""
        if self.due(self.c["eval_freq"], self.p.eval_step):
            self.evaluate("eval")
        if self.due(self.c["checkpoint_freq"], self.p.ckpt_step):
            self.checkpoint()

    def due(self, freq: int, last: int) -> bool:
        """A periodic action (every ``freq`` steps, 0: never; last done at step ``last``) is due once the step
        reaches the next multiple of ``freq``."""
        return bool(freq) and self.p.step // int(freq) > last // int(freq)

    def evaluate(self, name: str) -> None:
        """``eval_episodes`` deterministic episodes; the video (if any) is written before the row is logged, so
        an evaluation cut short by a signal is simply done again by the resumed run."""
        phase(name)
        step = self.p.step
        write = self.bar.write if name == "eval" else print
        returns = evaluate(self.eval_env, self.planner, self.info.episode_length, self.recorder,
                           warn=lambda msg: write(f"warning: {msg}, in the evaluation at step {step}"))
        stop_if_signalled()  # in case a library caught the signal's exception mid-rollout
        mean = sum(returns) / len(returns)
        video = None
        if self.recorder is not None and self.recorder.frames:
            video = write_video(video_path(self.run_dir, step), self.recorder.frames)
        with uninterrupted():
            self.logger.log_eval(step, mean)
            if video is not None:
                self.logger.log_video(step, video)
            self.p.eval_step, self.p.dirty = step, True
        write(f"eval @ {step}: mean return {mean:.1f} over {len(returns)} episodes")

    def checkpoint(self) -> Path:
        """Write the whole training state at the current step (a signal during the write waits for it)."""
        p = self.p
        with uninterrupted():
            state = training_state(step=p.step, burst_done=p.burst_done, config=self.c, task=self.info.__dict__,
                                   world_model=self.world_model, loss=self.loss, updater=self.updater,
                                   buffer=self.buffer, progress=p.saved())
            path = save_checkpoint(checkpoint_path(self.run_dir, p.step), state)
            p.ckpt_step, p.dirty = p.step, False
        return path

    def stop(self) -> None:
        """After SIGINT/SIGTERM: save what is done (unless the newest checkpoint already holds it), say how to
        continue. Later signals wait: the process is stopping anyway."""
        _Stop.deferred += 1
        if self.bar is not None:
            self.bar.close()
        name, step = signal.Signals(_Stop.signum).name, self.p.step
        if self.p.dirty:
            where = f"checkpoint saved to {self.checkpoint()}"
        elif self.p.ckpt_step:
            where = f"checkpoint {checkpoint_path(self.run_dir, step)} holds everything so far"
        else:
            print(f"interrupted during start-up ({name}), before the first env step: nothing to save yet; "
                  f"run the same command again")
            return
        print(f"interrupted at step {step} ({name}): {where}; continue with: {resume_command(self.run_dir)}")

    def shutdown(self) -> None:
        """Stop the collector's workers, close the envs and the logs (whatever was built)."""
        if self.collector is not None:
            self.collector.shutdown()
        for env in (self.env, self.eval_env):
            if env is not None and not env.is_closed:
                env.close()
        if self.logger is not None:
            self.logger.close()


def train(c: dict[str, Any]) -> None:
    """Run the recipe: SIGINT/SIGTERM at any moment checkpoints and exits cleanly (``Run.stop``)."""
    check_config(c)
    run = Run(c)
    _Stop.deferred -= 1  # from here on a signal stops the run
    try:
        stop_if_signalled()
        phase("startup")
        if run.build():
            run.train()
    except BaseException as err:
        if not _Stop.signum:
            if isinstance(err, NonFiniteUpdateError):
                path = run.checkpoint()  # the skipped updates never reached the parameters: this checkpoint is sound
                raise ConfigError(f"stopped at step {run.p.step}: {err} (checkpoint {path})") from None
            raise
        run.stop()
    finally:
        _Stop.deferred += 1
        run.shutdown()


def resume_command(run_dir: Path) -> str:
    """This process's command line with ``resume=<run_dir>`` instead of its run directory settings."""
    kept = [a for a in sys.argv[1:] if not a.startswith(("resume=", "hydra.run.dir="))]
    return shlex.join(["python", sys.argv[0], *kept, f"resume={run_dir}"])


def check_compatible(state: dict[str, Any], c: dict[str, Any]) -> None:
    """The checkpoint must come from the same task, networks, horizon and number of envs as the config."""
    wanted, found = _run_identity(c), _run_identity(state["config"])
    diffs = [f"{k}={found.get(k)!r} (config: {v!r})" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise ConfigError(f"the checkpoint differs from the config in {', '.join(diffs)}; "
                          f"resume with the same settings or start a new run")


def _run_identity(c: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint is tied to: task, horizon, number of envs and every model setting."""
    return {"task": c["task"], "obs": c.get("obs", "state"), "horizon": c["horizon"], "num_envs": c["num_envs"],
            **{f"model.{k}": v for k, v in c["model"].items()}}


def finished_returns(data: TensorDictBase) -> list[float]:
    """Returns of the episodes that ended in this batch (RewardSum's ``episode_reward`` at ``done``)."""
    done = data["next", "done"].reshape(-1)
    if not done.any():
        return []
    return data["next", "episode_reward"].reshape(-1)[done].tolist()


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or torch.is_tensor(v)}


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        train(to_dict(cfg))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a full disk or a directory that went away mid-run: say which file, no traceback
        print(os_error_line(err), file=sys.stderr)
        sys.exit(2)


def check_run_dir_writable(argv: list[str]) -> None:
    """Hydra creates the run directory before ``main`` runs and reports a failure as a traceback: probe it first
    (``hydra.run.dir=`` if given, else ``./runs``) and exit with a one-line error."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    target = Path(given[-1] if given else "runs")
    try:
        target.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target).close()
    except OSError as err:
        print(f"error: cannot write the run directory {target} ({err.strerror or err}); "
              f"choose a writable place with hydra.run.dir=PATH", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_run_dir_writable(sys.argv[1:])
    main()
