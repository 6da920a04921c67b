"""tdmpc2-trl: TD-MPC2 as a composition of TorchRL primitives."""
from tdmpc2_trl.config.schema import ConfigError, ModelConfig

__all__ = ["ConfigError", "ModelConfig", "QEnsemble", "WorldModel"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the networks import torch: only on first use, so that the recipes read their config (and install their
    # signal handlers) before anything slow is imported
    if name in ("QEnsemble", "WorldModel"):
        from tdmpc2_trl.model import world_model as modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
