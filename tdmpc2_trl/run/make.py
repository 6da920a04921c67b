"""Wire the TorchRL pieces from a recipe config: world model, loss, optimisers/updater, planner, env factory,
evaluation env, replay buffer and logger (the collector: ``run/collectors.make_collector``).

These are small ``make_*`` functions in the spirit of TorchRL's ``sota-implementations/*/utils.py``; each takes the
config group it needs (``tdmpc2_trl.config.schema``), and the trainer (``run/trainer.py``) calls them in order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchrl.data import TensorDictReplayBuffer
from torchrl.envs import EnvBase

from tdmpc2_trl.config.schema import (
    BufferConfig,
    ConfigError,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PlannerConfig,
    RunConfig,
    TrainConfig,
)
from tdmpc2_trl.data.replay_buffer import make_replay_buffer
from tdmpc2_trl.envs.factory import EnvFactory, TaskInfo
from tdmpc2_trl.envs.multitask import MultitaskEnvFactory
from tdmpc2_trl.envs.video import EpisodeRecorder
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.pixels import RandomShift
from tdmpc2_trl.networks.tasks import TaskSet
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.platform.checkpoint import atomic_file, named_os_error
from tdmpc2_trl.platform.precision import allow_tf32, resolve_precision
from tdmpc2_trl.run import resolve
from tdmpc2_trl.run.logs import RunLogger

EVAL_SEED_OFFSET = 10_000  # evaluation envs are seeded apart from the training envs (seed + 10_000 + i)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} requested but CUDA is not available; use device=cpu")
    return device


def make_discount(loss_cfg: LossConfig, info: TaskInfo) -> float:
    """``loss.discount``, or TD-MPC2's rule from the task's episode length (``run/resolve.py``)."""
    return resolve.discount(loss_cfg.discount, info.episode_length)


def make_world_model(
    model_cfg: ModelConfig, info: TaskInfo, device: torch.device, task_set: TaskSet | None = None
) -> WorldModel:
    """The networks for the task (``info``), or for every task of ``task_set`` (multitask; ``info``: theirs joined)."""
    return WorldModel(model_cfg, info.obs_shape, info.action_dim, episodic=info.episodic, task_set=task_set).to(device)


def make_loss(loss_cfg: LossConfig, world_model: WorldModel, discount: float) -> TDMPC2Loss:
    """The loss; pixel models get the random-shift augmentation (``loss.aug_pad`` pixels, TD-MPC2: 3)."""
    augment = RandomShift(loss_cfg.aug_pad) if world_model.pixels else None
    return TDMPC2Loss(
        world_model,
        discount,
        rho=loss_cfg.rho,
        consistency_coef=loss_cfg.consistency_coef,
        reward_coef=loss_cfg.reward_coef,
        value_coef=loss_cfg.value_coef,
        termination_coef=loss_cfg.termination_coef,
        entropy_coef=loss_cfg.entropy_coef,
        scale_tau=loss_cfg.tau,
        augment=augment,
    )


def make_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``precision=auto|fp32|bf16`` → the autocast dtype (auto: bf16 where its matmuls are faster, else fp32); on
    CUDA the matmuls left in fp32 use TF32."""
    dtype = resolve_precision(precision, device)
    if torch.device(device).type == "cuda":
        allow_tf32()
    return dtype


def enc_lr_scale(optim_cfg: OptimConfig, preset: str) -> float:
    """``optim.enc_lr_scale``, its null resolved for the preset (``run/resolve.py``)."""
    return resolve.enc_lr_scale(optim_cfg.enc_lr_scale, preset)


def planner_iterations(planner_cfg: PlannerConfig, preset: str, action_dim: int) -> int:
    """``planner.iterations`` plus ``planner.extra_iterations``, its null resolved (``run/resolve.py``)."""
    return planner_cfg.iterations + resolve.extra_iterations(planner_cfg.extra_iterations, preset, action_dim)


def make_updater(
    optim_cfg: OptimConfig, loss: TDMPC2Loss, tau: float, autocast_dtype: torch.dtype | None = None
) -> TDMPC2Update:
    """Both Adams and the update (target Q lerped by ``tau``); ``optim.compile`` runs the loss terms through
    ``torch.compile``."""
    scale = enc_lr_scale(optim_cfg, loss.world_model.cfg.name)
    wm_optim, pi_optim = make_optimizers(loss, lr=optim_cfg.lr, enc_lr_scale=scale)
    loss.compile_terms(optim_cfg.compile)
    return TDMPC2Update(
        loss, wm_optim, pi_optim, grad_clip_norm=optim_cfg.grad_clip_norm, tau=tau, autocast_dtype=autocast_dtype
    )


def make_planner(
    planner_cfg: PlannerConfig,
    world_model: WorldModel,
    action_spec,
    discount: float,
    autocast_dtype: torch.dtype | None = None,
    *,
    horizon: int,
) -> TDMPC2Planner:
    """MPPI over ``world_model`` for ``horizon`` steps (``model.horizon``, read by the caller from the config where it
    is set: the networks never read it); ``action_spec``: the env's (``None``: [-1, 1], the agent envs of
    ``envs.make_env``)."""
    model = world_model.cfg
    return TDMPC2Planner(
        world_model,
        action_spec,
        discount=discount,
        horizon=horizon,
        num_samples=planner_cfg.num_samples,
        num_pi_trajs=planner_cfg.num_pi_trajs,
        num_elites=planner_cfg.num_elites,
        iterations=planner_iterations(planner_cfg, model.name, world_model.action_dim),
        temperature=planner_cfg.temperature,
        min_std=planner_cfg.min_std,
        max_std=planner_cfg.max_std,
        mpc=planner_cfg.mpc,
        compile_plan=planner_cfg.compile,
        compile_scope=planner_cfg.compile_scope,
        autocast_dtype=autocast_dtype,
    )


def make_env_factory(
    cfg: TrainConfig, info: TaskInfo, planner: TDMPC2Planner, task_set: TaskSet | None = None
) -> EnvFactory | MultitaskEnvFactory:
    """The factory of every env of the run (the collector's or each worker's, the evaluation's): ``cfg.num_envs``
    envs of ``cfg.task`` (of every task of ``task_set``: multitask), seeded from ``cfg.seed``, with the planner's
    primer. The envs step on the CPU (``run/collectors.py``) whatever the device."""
    primer = (planner.primer("cpu"),)
    if task_set is None:
        return EnvFactory(cfg.task, info.obs, cfg.seed, cfg.num_envs, "cpu", primer)
    return MultitaskEnvFactory(task_set, cfg.seed, cfg.num_envs, "cpu", primer)


def make_recorder(eval_cfg: EvalConfig) -> EpisodeRecorder | None:
    """The frames of each evaluation's first episode (``eval.save_video``), else ``None``."""
    return EpisodeRecorder(eval_cfg.video_size) if eval_cfg.save_video else None


def make_eval_env(
    envs: EnvFactory | MultitaskEnvFactory, eval_cfg: EvalConfig, recorder: EpisodeRecorder | None = None
) -> EnvBase:
    """``eval.episodes`` envs (of every task, for a multitask factory) from the run's factory, seeded
    ``EVAL_SEED_OFFSET`` above its envs; ``recorder`` renders the first one."""
    seed = envs.seed + EVAL_SEED_OFFSET
    if isinstance(envs, MultitaskEnvFactory):
        env = envs.replace(seed=seed, envs_per_task=eval_cfg.episodes)()
    else:
        env = envs.replace(seed=seed, num_envs=eval_cfg.episodes, render=recorder is not None)()
    if recorder is not None:
        env.append_transform(recorder)
    return env


def make_buffer(
    buffer_cfg: BufferConfig, horizon: int, scratch_dir: Path, device: torch.device
) -> TensorDictReplayBuffer:
    """The replay buffer of ``buffer.size`` steps (resolved), sampling ``buffer.batch_size`` slices of
    ``horizon`` transitions onto ``device``; ``buffer.storage=memmap`` maps it under ``scratch_dir``."""
    return make_replay_buffer(
        capacity=buffer_cfg.size,
        batch_size=buffer_cfg.batch_size,
        horizon=horizon,
        storage=buffer_cfg.storage,
        scratch_dir=scratch_dir,
        device=device,
        episode_end_slices=buffer_cfg.episode_end_slices,
    )


def make_logger(cfg: RunConfig, run_dir: Path) -> RunLogger:
    """The run's record: ``run_dir`` (created) with ``config.yaml`` (the resolved config, written atomically: what
    a resume reads), eval.csv and train.csv, and ``logger.backend``'s TorchRL logger given the same config."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise named_os_error(err, run_dir) from None
    with atomic_file(run_dir / "config.yaml", "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return RunLogger(run_dir, dataclasses.asdict(cfg), cfg.logger)
