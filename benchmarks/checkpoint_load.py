#!/usr/bin/env python
"""Start-up cost of evaluating a checkpoint: the whole file (as ``recipes/eval.py`` read it before) against the
networks only (``load_checkpoint(networks_only=True)``: memory-mapped, the replay buffer never read).

    python benchmarks/checkpoint_load.py runs/.../checkpoints/step_000001000.pt [--repeats 3]

Each mode runs in a fresh process (``--mode full|networks``): load the file, build the world model from its config,
load its weights. Prints one JSON line per mode: seconds (median of ``--repeats`` processes) and the process's peak
resident memory (MiB) above what it held before loading.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(path: str, mode: str) -> dict:
    import torch

    from tdmpc2_trl.config.schema import ModelConfig
    from tdmpc2_trl.networks.world_model import WorldModel
    from tdmpc2_trl.platform.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    state = load_checkpoint(Path(path), networks_only=mode == "networks")
    task = state["task"]
    wm = WorldModel(
        ModelConfig.from_dict(state["config"]["model"]),
        task["obs_dim"],
        task["action_dim"],
        episodic=task.get("episodic", False),
    )
    wm.load_state_dict(state["world_model"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "seconds": seconds,
        "peak_rss_mib": (peak - before) / 1024,
        "file_mib": Path(path).stat().st_size / 2**20,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--mode", choices=("full", "networks"), default=None, help="one measurement in this process")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(measure(a.checkpoint, a.mode)))
        return 0
    for mode in ("full", "networks"):
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, a.checkpoint, "--mode", mode], check=True, capture_output=True, text=True
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(a.repeats)
        ]
        print(
            json.dumps(
                {
                    "mode": mode,
                    "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
                    "peak_rss_mib_median": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
                    "file_mib": round(runs[0]["file_mib"], 1),
                    "repeats": a.repeats,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
