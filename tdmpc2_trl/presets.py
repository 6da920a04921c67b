"""Locate the Hydra config directory and load model presets from ``configs/model/*.yaml``."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .config import ConfigError, ModelConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_dir() -> Path:
    """The repository's ``configs/`` (the package is meant to be installed with ``pip install -e .``)."""
    if not (CONFIG_DIR / "model").is_dir():
        raise ConfigError(f"config directory {CONFIG_DIR} not found; install the project with `pip install -e .`")
    return CONFIG_DIR


def preset_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def load_model_config(name: str, **overrides) -> ModelConfig:
    """The ``ModelConfig`` of preset ``name`` (``seed``, ``1m``, ``5m``, ``19m``, ``48m``, ``317m``)."""
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown model preset {name!r}; available: {', '.join(preset_names())}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    cfg.update(overrides)
    return ModelConfig.from_dict(cfg)
