"""tdmpc2_trl.platform.allocator: freed tensor memory is reused across updates instead of being faulted in again."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tdmpc2_trl.platform.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# page faults of each of 8 eager 1m updates (batch 256, H=3) after 3 warm-up updates, as one line
FAULTS_PER_UPDATE = """
import resource, sys
sys.path.insert(0, "benchmarks")
from tdmpc2_trl.platform.process import tune_process
tune_process()
import torch
import update
torch.set_num_threads(1)
updater, batch = update.build(update.parse_args(["--model", "1m", "--horizon", "3", "--no-compile"]))
for _ in range(3):
    updater(batch)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    updater(batch)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _faults(**env: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_UPDATE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [int(v) for v in out.stdout.split()]


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_updates_reuse_freed_memory_instead_of_faulting_it_in():
    kept = _faults()
    returned = _faults(TDMPC2_TRL_MALLOPT="0")  # glibc's defaults: the same updates fault thousands of pages each
    # glibc's defaults fault ~10,000 pages in every update; kept memory faults almost none, with the odd update
    # (about one in three, a few hundred pages) that grows an arena: compare totals, not single updates
    assert statistics.median(returned) > 1000, returned
    assert sum(kept) * 10 < sum(returned), (kept, returned)
    assert min(kept) < 100, kept  # and some updates fault (almost) nothing at all


def test_a_user_setting_or_the_opt_out_wins(monkeypatch):
    monkeypatch.setenv("TDMPC2_TRL_MALLOPT", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("TDMPC2_TRL_MALLOPT")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert keep_freed_memory() is GLIBC


def test_importing_the_package_changes_nothing_in_the_process():
    code = "import os, tdmpc2_trl, tdmpc2_trl.run.trainer; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split()[-1] == "None"
