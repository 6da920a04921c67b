"""tdmpc2-trl: TD-MPC2 as a composition of TorchRL primitives."""
from .config import ConfigError, ModelConfig
from .modules import QEnsemble, WorldModel

__all__ = ["ConfigError", "ModelConfig", "QEnsemble", "WorldModel"]
__version__ = "0.1.0"
