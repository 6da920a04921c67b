"""Keep freed tensor memory in the process (glibc), so that the next update or planner call reuses it.

Every compiled update or planner call allocates its intermediate buffers (MBs each) and frees them at the end.
glibc's malloc serves blocks above its mmap threshold with fresh ``mmap``s and returns free memory at the top of the
heap to the OS above its trim threshold, so the next call touches new pages: 2,800-4,700 page faults and 7-10 ms of
kernel time per 1m update, 4,900-7,100 and 15-21 ms per 5m planner call (2-core AVX512-BF16 CPU). Raising both
thresholds to 1 GiB keeps that memory for reuse (no faults after the first calls): the 1m update 8-17 % and the
5m plan 9 % faster (README "Benchmarks"). The process keeps its peak heap instead of handing it back between calls.

TorchRL/torch have no such setting (torch's CPU allocator calls ``malloc`` directly), hence this module. Applied at
``import tdmpc2_trl`` (any time works: ``mallopt`` acts at run time) on glibc only; a glibc malloc setting of the
user's (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) or ``TDMPC2_TRL_MALLOPT=0`` wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["KEEP_BYTES", "keep_freed_memory"]

KEEP_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to ``KEEP_BYTES``; ``False`` where not applied (not glibc, or the user
    configured malloc)."""
    if os.environ.get("TDMPC2_TRL_MALLOPT", "1") == "0" or any(k in os.environ for k in _USER_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 1 GiB above glibc's cap on the mmap threshold on some versions: fall back to the cap (32 MiB on 64-bit)
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(mmap_ok and mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
