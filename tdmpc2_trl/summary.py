"""Print every network of a preset and its trainable parameter count.

    python -m tdmpc2_trl.summary model=seed obs_dim=18 action_dim=4
    python -m tdmpc2_trl.summary model=5m obs=rgb action_dim=1     # pixel observations (9, 64, 64): conv encoder
"""
from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from .config import ConfigError, ModelConfig
from .modules import WorldModel
from .pixels import pixel_obs_shape
from .presets import config_dir

_TITLES = {
    "encoder": "ENCODER: observation -> latent",
    "dynamics": "DYNAMICS: (latent, action) -> next latent",
    "reward": "REWARD: (latent, action) -> reward logits",
    "termination": "TERMINATION: termination logit",
    "qvalue": "Q ENSEMBLE: (latent, action) -> Q logits of every head (a target copy lives in the loss)",
    "policy": "POLICY: latent -> squashed Gaussian action",
}


def format_summary(model: WorldModel) -> str:
    counts = model.parameter_counts()
    obs = f"obs shape {model.obs_shape}" if model.pixels else f"obs dim {model.obs_dim}"
    lines = [f"TD-MPC2 model '{model.cfg.name}': {obs}, action dim {model.action_dim}", ""]
    for i, (name, title) in enumerate(_TITLES.items(), 1):
        module = getattr(model, name)
        lines.append(f"{i}. {title}")
        lines.append(repr(module.module) if module is not None else "  (not built: task is not episodic)")
        lines.append(f"   Trainable Parameters: {counts[name]:,}")
        lines.append("")
    lines += [
        "PARAMETER SUMMARY:",
        f"  World Model (Encoder + Dynamics + Reward + Termination + Q): {counts['world_model']:,}",
        f"  Policy Network: {counts['policy']:,}",
        "  Target Q Network: 0 (not trained)",
        f"  TOTAL TRAINABLE PARAMETERS: {counts['total']:,}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name="summary", overrides=argv)
        model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
        if cfg.obs not in ("state", "rgb"):
            raise ConfigError(f"obs={cfg.obs!r} must be state or rgb")
        obs_shape = pixel_obs_shape() if cfg.obs == "rgb" else int(cfg.obs_dim)
        model = WorldModel(model_cfg, obs_shape, int(cfg.action_dim), episodic=bool(cfg.episodic))
    except (HydraException, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
