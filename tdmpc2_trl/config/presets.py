"""The model presets of ``configs/model/*.yaml`` (``8m-h10``, ``1m`` … ``317m``)."""

from __future__ import annotations

import dataclasses

from tdmpc2_trl.config.compose import config_dir, load_config
from tdmpc2_trl.config.schema import ModelConfig

__all__ = ["config_dir", "load_model_config", "preset_names"]


def preset_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def load_model_config(name: str, **overrides) -> ModelConfig:
    """The checked ``ModelConfig`` of preset ``name``, with ``overrides`` (e.g. ``latent_dim=16``) applied."""
    preset = load_config("config", [f"model={name}"]).model
    return ModelConfig.from_dict({**dataclasses.asdict(preset), **overrides})
