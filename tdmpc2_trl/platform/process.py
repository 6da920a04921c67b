"""Process-wide settings for a training or benchmark process: the OpenMP wait and the allocator.

Importing ``tdmpc2_trl`` changes nothing in the process; the recipes (and the benchmarks) call ``tune_process()``
first, and a script of your own can do the same before it imports torch::

    >>> from tdmpc2_trl.platform.process import tune_process
    >>> settings = tune_process()  # before torch loads, for the OpenMP wait to take effect
    >>> sorted(settings)
    ['freed_memory_kept', 'gomp_spincount']

Standard library only.
"""

from __future__ import annotations

import os
import sys

from tdmpc2_trl.platform.allocator import keep_freed_memory

__all__ = ["tune_process"]

# OpenMP threads that finish a parallel region spin only briefly (1000 rounds, some microseconds) before they sleep:
# spinning forever takes the core a working thread needs when another process is busy, sleeping at once costs a
# wake-up per region (docs/performance.md, "OpenMP wait").
SPIN_ROUNDS = "1000"


def tune_process() -> dict[str, object]:
    """Set the OpenMP wait (``GOMP_SPINCOUNT``, unless the user set it or ``OMP_WAIT_POLICY``) and keep freed tensor
    memory in the process (``allocator.keep_freed_memory``). libgomp reads the wait once, when torch loads it: call
    this before ``import torch``. Returns what was set."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["GOMP_SPINCOUNT"] = SPIN_ROUNDS
    return {"gomp_spincount": os.environ.get("GOMP_SPINCOUNT"), "freed_memory_kept": keep_freed_memory()}
