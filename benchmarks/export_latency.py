#!/usr/bin/env python
"""Latency of the exported planner (``tdmpc2_trl.export``) at batch 1, per model preset, with and without the mean
warm start.

    python benchmarks/export_latency.py --models 1m,5m,8m-h10 --steps 200 --threads 2 [--device cpu|cuda]

For each preset: a world model of the seed's robot sizes (18 observations, 4 actions, a termination head; random
weights: the latency does not depend on their values) is exported once, saved, loaded back with ``torch.export.load``
and called ``--steps`` times under ``torch.inference_mode`` after ``--warmup`` calls: with the warm start (an episode
start every 100 calls), then without it (``reset=True`` at every call: what ``--no-warm-start`` computes).
Prints one JSON line per preset and warm-start setting: p50/p99/max ms per call and the highest control rate it
sustains (1000 / p99 ms: at most 1 % of the control steps would miss their deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="1m,5m,8m-h10")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    import torch

    from tdmpc2_trl.config.presets import load_model_config
    from tdmpc2_trl.config.schema import PlannerConfig
    from tdmpc2_trl.export import export_program
    from tdmpc2_trl.networks.world_model import WorldModel
    from tdmpc2_trl.run.make import make_planner

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    for name in a.models.split(","):
        torch.manual_seed(0)
        model_cfg = load_model_config(name)
        wm = WorldModel(model_cfg, 18, 4, episodic=True).to(device)
        planner = make_planner(PlannerConfig(compile=False), wm, None, 0.99, horizon=model_cfg.horizon)
        start = time.perf_counter()
        program = export_program(planner, 1, warm_start=True)
        export_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "planner.pt2")
            torch.export.save(program, path)
            start = time.perf_counter()
            deployed = torch.export.load(path).module()
            load_s = time.perf_counter() - start
        # Without the warm start = every call an episode start (reset=True zeroes the carried mean first), which
        # is exactly what an export with --no-warm-start computes.
        for warm in (True, False):
            obs = torch.randn(a.steps + a.warmup, 1, 18, device=device)
            ms = []
            with torch.inference_mode():
                for i in range(a.steps + a.warmup):
                    reset = torch.tensor([not warm or i % 100 == 0], device=device)
                    t = time.perf_counter()
                    deployed(obs[i], reset)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if i >= a.warmup:
                        ms.append((time.perf_counter() - t) * 1e3)
            p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
            print(
                json.dumps(
                    {
                        "model": name,
                        "warm_start": warm,
                        "device": a.device,
                        "threads": a.threads,
                        "p50_ms": round(statistics.median(ms), 2),
                        "p99_ms": round(p99, 2),
                        "max_ms": round(max(ms), 2),
                        "max_rate_hz": round(1000 / p99, 1),
                        "export_s": round(export_s, 1),
                        "load_s": round(load_s, 1),
                        "steps": len(ms),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
