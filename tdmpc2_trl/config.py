"""The model configuration: one dataclass that every network builder reads (Hydra group ``model/``)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping


class ConfigError(ValueError):
    """A user-facing configuration mistake; recipes print its message as a one-line error."""


@dataclass
class ModelConfig:
    """Sizes and layer choices of the TD-MPC2 networks. ``configs/model/*.yaml`` fill it."""

    name: str = "seed"
    latent_dim: int = 512
    enc_dim: int = 512
    num_enc_layers: int = 4  # Linear layers in the encoder, its output layer included (TD-MPC2's meaning)
    encoder_final: str = "simnorm"  # seed: Linear → SimNorm; official: "ln_simnorm" (Linear → LayerNorm → SimNorm)
    mlp_dim: int = 512
    num_mlp_layers: int = 3  # hidden blocks of dynamics, reward, Q heads and policy
    num_q: int = 5
    q_dropout: float = 0.01
    simnorm_dim: int = 8
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    termination: str = "seed"  # seed: ReLU MLP on (z, a), always built; official: normed MLP on z, episodic only
    policy_head: str = "split"  # split: mean_head + log_std_head; joint: one Linear(mlp, 2A)
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    horizon: int = 10  # the preset's default planning/training horizon (the recipe's `horizon` reads it)
    num_channels: int = 32  # conv channels of the pixel encoder (obs=rgb; TD-MPC2: 32)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown model setting(s) {unknown}; known: {sorted(known)}")
        out = cls(**dict(cfg))
        out.validate()
        return out

    def validate(self) -> None:
        choices = {
            "encoder_final": ("simnorm", "ln_simnorm"),
            "termination": ("seed", "official"),
            "policy_head": ("split", "joint"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} is not one of {allowed}")
        if self.latent_dim % self.simnorm_dim:
            raise ConfigError(f"model.latent_dim={self.latent_dim} must be divisible by simnorm_dim={self.simnorm_dim}")
        if self.num_enc_layers < 2:
            raise ConfigError(f"model.num_enc_layers={self.num_enc_layers}: the encoder needs at least 2 layers")
        if self.num_q < 2:
            raise ConfigError(f"model.num_q={self.num_q}: TD-MPC2 needs at least 2 Q heads")
        if self.num_channels < 1:
            raise ConfigError(f"model.num_channels={self.num_channels} must be >= 1")
        if self.num_bins < 2:
            raise ConfigError(f"model.num_bins={self.num_bins}: two-hot regression needs at least 2 bins")
