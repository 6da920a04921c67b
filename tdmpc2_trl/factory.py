"""Wire the TorchRL pieces from a recipe config: world model, loss, optimisers/updater, planner.

These are small ``make_*`` functions in the spirit of TorchRL's ``sota-implementations/*/utils.py``; the recipe
(``recipes/train.py``) reads top to bottom and calls them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, ModelConfig
from .envs import TaskInfo
from .loss import TDMPC2Loss
from .math import discount_from_episode_length
from .modules import WorldModel
from .pixels import RandomShift
from .planner import TDMPC2Planner
from .precision import resolve_precision
from .update import TDMPC2Update, make_optimizers


def to_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} requested but CUDA is not available; use device=cpu")
    return device


def make_discount(cfg: Mapping[str, Any], info: TaskInfo) -> float:
    return float(cfg["discount"]) if cfg.get("discount") is not None else discount_from_episode_length(info.episode_length)


def make_world_model(cfg: Mapping[str, Any], info: TaskInfo, device: torch.device) -> WorldModel:
    model_cfg = ModelConfig.from_dict({**cfg["model"], "horizon": int(cfg["horizon"])})
    return WorldModel(model_cfg, info.obs_shape, info.action_dim, episodic=info.episodic).to(device)


def make_loss(cfg: Mapping[str, Any], world_model: WorldModel, discount: float) -> TDMPC2Loss:
    """The loss; pixel models get the random-shift augmentation (``aug_pad`` pixels, TD-MPC2: 3)."""
    augment = RandomShift(int(cfg.get("aug_pad", 3))) if world_model.pixels else None
    return TDMPC2Loss(
        world_model, discount, rho=cfg["rho"], consistency_coef=cfg["consistency_coef"],
        reward_coef=cfg["reward_coef"], value_coef=cfg["value_coef"], termination_coef=cfg["termination_coef"],
        entropy_coef=cfg["entropy_coef"], scale_tau=cfg["tau"], augment=augment,
    )


def make_autocast_dtype(cfg: Mapping[str, Any], device: torch.device) -> torch.dtype | None:
    """``precision=auto|fp32|bf16`` → the autocast dtype (auto: bf16 where its matmuls are faster, else fp32)."""
    return resolve_precision(str(cfg.get("precision", "fp32")), device)


# Official TD-MPC2 training defaults where the seed is silent; they apply to the official presets only.
OFFICIAL_PRESETS = ("1m", "5m", "19m", "48m", "317m")
OFFICIAL_ENC_LR_SCALE = 0.3  # tdmpc2/config.yaml enc_lr_scale
LARGE_ACTION_DIM, LARGE_ACTION_EXTRA_ITERATIONS = 20, 2  # tdmpc2/tdmpc2.py: iterations += 2 if action_dim >= 20


def enc_lr_scale(cfg: Mapping[str, Any]) -> float:
    """``enc_lr_scale`` if set, else the preset's: 0.3 for the official presets, 1.0 (the seed's single lr) else."""
    if cfg.get("enc_lr_scale") is not None:
        return float(cfg["enc_lr_scale"])
    return OFFICIAL_ENC_LR_SCALE if cfg["model"].get("name") in OFFICIAL_PRESETS else 1.0


def planner_iterations(cfg: Mapping[str, Any], action_dim: int) -> int:
    """``planner.iterations``, plus 2 for an official preset on an action of >= 20 dimensions (as TD-MPC2)."""
    large = cfg["model"].get("name") in OFFICIAL_PRESETS and action_dim >= LARGE_ACTION_DIM
    return int(cfg["planner"]["iterations"]) + (LARGE_ACTION_EXTRA_ITERATIONS if large else 0)


def make_updater(cfg: Mapping[str, Any], loss: TDMPC2Loss, autocast_dtype: torch.dtype | None = None) -> TDMPC2Update:
    """Both Adams and the update; ``compile_update`` runs the loss terms through ``torch.compile``."""
    wm_optim, pi_optim = make_optimizers(loss, lr=cfg["lr"], enc_lr_scale=enc_lr_scale(cfg))
    loss.compile_terms(bool(cfg["compile_update"]))
    return TDMPC2Update(loss, wm_optim, pi_optim, grad_clip_norm=cfg["grad_clip_norm"], tau=cfg["tau"],
                        autocast_dtype=autocast_dtype)


def make_planner(cfg: Mapping[str, Any], world_model: WorldModel, action_spec, discount: float,
                 autocast_dtype: torch.dtype | None = None) -> TDMPC2Planner:
    p, iterations = cfg["planner"], planner_iterations(cfg, world_model.action_dim)
    return TDMPC2Planner(
        world_model, action_spec, discount=discount, horizon=int(cfg["horizon"]), num_samples=p["num_samples"],
        num_pi_trajs=p["num_pi_trajs"], num_elites=p["num_elites"], iterations=iterations,
        temperature=p["temperature"], min_std=p["min_std"], max_std=p["max_std"], mpc=p["mpc"],
        compile_plan=bool(p["compile"]), autocast_dtype=autocast_dtype,
    )
