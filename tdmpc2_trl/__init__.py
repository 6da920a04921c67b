"""tdmpc2-trl: TD-MPC2 as a composition of TorchRL primitives."""
import os

# OpenMP threads that finish a parallel region spin only briefly (1000 rounds, some microseconds) before they sleep.
# libgomp (torch's OpenMP on Linux) reads this once, when torch loads it: it only takes effect if this package is
# imported before torch, and a GOMP_SPINCOUNT or OMP_WAIT_POLICY the user set wins. Measured on a 2-core CPU, 1m
# preset, 2 threads, plan + update (medians): idle 148 ms (300 rounds 178, spinning forever ~150, sleeping at once
# ~220); with one other busy process 311 ms (300 rounds 277, spinning forever 422: its spinning threads take the
# core the working thread needs). README "CPU threads".
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

from .allocator import keep_freed_memory  # noqa: E402  (standard library only)

keep_freed_memory()  # freed tensor memory stays for the next call instead of new page faults (allocator.py)

from .config import ConfigError, ModelConfig  # noqa: E402

__all__ = ["ConfigError", "ModelConfig", "QEnsemble", "WorldModel"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the networks import torch: only on first use, so that the recipes read their config (and install their
    # signal handlers) before anything slow is imported
    if name in ("QEnsemble", "WorldModel"):
        from . import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
