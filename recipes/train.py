"""Train TD-MPC2 from TorchRL parts: env → Collector(policy=planner) → replay buffer → loss/optimisers.

    python recipes/train.py                                  # seed networks on Pendulum-v1
    python recipes/train.py task=cartpole-swingup model=5m steps=100000 num_envs=4
    python recipes/train.py resume=runs/Pendulum-v1/seed/seed1/2026-01-01_00-00-00

The run directory holds config.yaml (resolved), eval.csv (step,episode_reward), train.csv and checkpoints/.
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tqdm import tqdm

from tdmpc2_trl.checkpoint import (
    checkpoint_path, resolve_checkpoint, restore_training_state, save_checkpoint, training_state,
)
from tdmpc2_trl.collectors import check_collector_config, make_collector, push_weights
from tdmpc2_trl.config import ConfigError
from tdmpc2_trl.data import add, make_replay_buffer, next_traj_offset, sample_batch
from tdmpc2_trl.envs import make_env, task_info
from tdmpc2_trl.evaluate import evaluate
from tdmpc2_trl.factory import (
    make_autocast_dtype, make_discount, make_loss, make_planner, make_updater, make_world_model, resolve_device, to_dict,
)
from tdmpc2_trl.precision import precision_name
from tdmpc2_trl.runlog import RunLogger
from tdmpc2_trl.update import NonFiniteUpdateError
from tdmpc2_trl.video import EpisodeRecorder, video_path, write_video


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


class Interrupted(Exception):
    """Raised by the SIGTERM handler so the loop can checkpoint and exit cleanly."""


def train(c: dict[str, Any]) -> None:
    check_config(c)
    run_dir = Path(c["run_dir"])
    device = resolve_device(c["device"])
    if c["threads"]:
        torch.set_num_threads(int(c["threads"]))
    info = task_info(c["task"], c.get("obs", "state"))
    torch.manual_seed(c["seed"])
    steps, num_envs = int(c["steps"]), int(c["num_envs"])
    seed_steps = int(c["seed_steps"] or max(1000, 5 * info.episode_length))
    capacity = int(c["buffer_size"] or min(1_000_000, steps))

    # --- the TorchRL pieces, all sharing one world model ---
    discount = make_discount(c, info)
    world_model = make_world_model(c, info, device)
    loss = make_loss(c, world_model, discount)
    autocast_dtype = make_autocast_dtype(c, device)
    updater = make_updater(c, loss, autocast_dtype)
    env = make_env(c["task"], seed=c["seed"], num_envs=num_envs, device=device, obs=info.obs)
    planner = make_planner(c, world_model, env.action_spec_unbatched, discount, autocast_dtype)
    env.append_transform(planner.primer())
    recorder = EpisodeRecorder(int(c["video_size"])) if c.get("save_video") else None  # videos/ of evaluations
    eval_env = make_env(c["task"], seed=c["seed"] + 10_000, num_envs=int(c["eval_episodes"]), device=device,
                        transforms=[planner.primer(), *([recorder] if recorder else [])], obs=info.obs,
                        render=recorder is not None)
    buffer = make_replay_buffer(capacity=capacity, batch_size=int(c["batch_size"]), horizon=int(c["horizon"]),
                                storage=c["buffer_storage"], scratch_dir=run_dir / "buffer", device=device)

    step, burst_done = 0, False
    if c["resume"]:
        path, state = resolve_checkpoint(c["resume"])
        check_compatible(state, c)
        step, burst_done = restore_training_state(state, world_model=world_model, loss=loss, updater=updater,
                                                  buffer=buffer)
        print(f"resumed from {path} at step {step}")
    traj_offset = next_traj_offset(buffer)  # the new collector restarts its trajectory ids at 0
    if step >= steps:
        print(f"nothing to do: the run is already at step {step} >= steps={steps}")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(c), run_dir / "config.yaml")
    logger = RunLogger(run_dir, c, c["logger"])
    print(f"run {run_dir}: task={c['task']} model={c['model']['name']} device={device} "
          f"precision={precision_name(autocast_dtype)} threads={torch.get_num_threads()}")

    def checkpoint() -> Path:
        state = training_state(step=step, burst_done=burst_done, config=c, task=info.__dict__,
                               world_model=world_model, loss=loss, updater=updater, buffer=buffer)
        return save_checkpoint(checkpoint_path(run_dir, step), state)

    # collector.workers / collector.backend: one process, K worker processes or K Ray actors (collectors.py)
    collector = make_collector(c, env, planner, total_frames=steps - step,
                               init_random_frames=max(0, seed_steps - step), device=device)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True, disable=not c["progress"])
    next_eval = _next_multiple(step, c["eval_freq"])
    next_ckpt = _next_multiple(step, c["checkpoint_freq"])
    metrics: dict[str, float] = {}
    last_return, t_start, step_start = float("nan"), time.perf_counter(), step
    try:
        for data in collector:
            add(buffer, data, traj_offset)
            step += data.numel()
            if not torch.isfinite(data["next", "observation"]).all():
                bar.write(f"warning: the env returned a non-finite observation at step {step}")
            if step >= seed_steps:
                n_updates = seed_steps if not burst_done else max(1, round(data.numel() * c["utd_ratio"]))
                burst_done = True
                for i in range(n_updates):
                    metrics = updater(sample_batch(buffer)).to_dict()
                    if n_updates > 1 and i % 10 == 0:  # TD-MPC2's initial burst: show that it is moving
                        bar.set_postfix_str(f"initial updates {i}/{n_updates}")
                push_weights(collector, planner)  # to the workers, if any
            for episode_reward in finished_returns(data):
                last_return = episode_reward
                elapsed = time.perf_counter() - t_start
                logger.log_train(step, {"episode_reward": episode_reward, "elapsed_s": elapsed,
                                        "steps_per_s": (step - step_start) / elapsed, **_floats(metrics)})
            bar.update(data.numel())
            bar.set_postfix(ret=f"{last_return:.1f}", refresh=False)
            if next_eval and step >= next_eval:
                _eval_and_log(eval_env, planner, info.episode_length, logger, step, bar, recorder)
                next_eval = _next_multiple(step, c["eval_freq"])
            if next_ckpt and step >= next_ckpt:
                checkpoint()
                next_ckpt = _next_multiple(step, c["checkpoint_freq"])
    except (KeyboardInterrupt, Interrupted):
        bar.close()
        path = checkpoint()
        print(f"interrupted at step {step}: checkpoint saved to {path}; continue with resume={run_dir}")
        _shutdown(collector, env, eval_env, logger)
        return
    except NonFiniteUpdateError as err:
        bar.close()
        path = checkpoint()  # the skipped updates never reached the parameters: this checkpoint is sound
        _shutdown(collector, env, eval_env, logger)
        raise ConfigError(f"stopped at step {step}: {err} (checkpoint {path})") from None
    bar.close()
    _eval_and_log(eval_env, planner, info.episode_length, logger, step, None, recorder)
    path = checkpoint()
    print(f"done: {step} env steps, checkpoint {path}")
    _shutdown(collector, env, eval_env, logger)


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


def _eval_and_log(eval_env, planner, max_steps: int, logger: RunLogger, step: int, bar,
                  recorder: EpisodeRecorder | None = None) -> float:
    returns = evaluate(eval_env, planner, max_steps, recorder)
    mean = sum(returns) / len(returns)
    logger.log_eval(step, mean)
    if recorder is not None and recorder.frames:
        logger.log_video(step, write_video(video_path(logger.run_dir, step), recorder.frames))
    (bar.write if bar is not None else print)(f"eval @ {step}: mean return {mean:.1f} over {len(returns)} episodes")
    return mean


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or torch.is_tensor(v)}


def _next_multiple(step: int, freq: int) -> int:
    """The next step count that is a multiple of ``freq`` (0 when ``freq`` is 0: disabled)."""
    return 0 if not freq else (step // freq + 1) * freq


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted()


def _shutdown(collector, env, eval_env, logger) -> None:
    collector.shutdown()
    for e in (env, eval_env):
        if not e.is_closed:
            e.close()
    logger.close()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        train(to_dict(cfg))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a full disk or a directory that went away mid-run: say which file, no traceback
        where = f"cannot write {err.filename}: " if err.filename else ""  # ConnectionError etc. name no file
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
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
