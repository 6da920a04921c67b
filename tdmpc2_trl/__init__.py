"""tdmpc2-trl: TD-MPC2 as a composition of TorchRL primitives."""
import os

# OpenMP threads that finish a parallel region spin only briefly (300 rounds, a few microseconds) before they sleep.
# libgomp (torch's OpenMP on Linux) reads this once, when torch loads it: it only takes effect if this package is
# imported before torch, and a GOMP_SPINCOUNT or OMP_WAIT_POLICY the user set wins. Measured on a 2-core CPU, 1m
# preset, 2 threads, plan + update per env step: idle 154 ms (libgomp's default 145-157 ms); with one other busy
# process 236 ms (default 422 ms: its spinning threads take the core the working thread needs). README "CPU threads".
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "300"

from .config import ConfigError, ModelConfig  # noqa: E402
from .modules import QEnsemble, WorldModel  # noqa: E402

__all__ = ["ConfigError", "ModelConfig", "QEnsemble", "WorldModel"]
__version__ = "0.1.0"
