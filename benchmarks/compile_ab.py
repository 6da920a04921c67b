"""A/B of inductor options inside one process: two copies of the planner (or update), B compiled with ``--options``,
timed in alternating blocks; print one JSON line.

    python benchmarks/compile_ab.py --what update --model 1m --threads 2 --options '{"cpp.threads": 1}'

On a shared host the same benchmark varies by up to ±30 % from one process to the next; two variants called in
turn inside one process see the same machine, so their ratio is the figure to read. Both copies have the same
weights and inputs; B's ``torch.compile`` gets ``options`` (inductor config keys), so dynamo compiles it separately.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import plan as plan_bench
import torch
import update as update_bench
from _common import time_calls
from torchrl.envs.utils import ExplorationType, set_exploration_type


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("plan", "update"), default="update")
    p.add_argument("--model", default="1m")
    p.add_argument("--horizon", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--options", default="{}", help="JSON dict of inductor options for B, e.g. '{\"cpp.threads\": 1}'")
    p.add_argument("--blocks", type=int, default=12, help="timed blocks per variant (alternating A, B / B, A)")
    p.add_argument("--calls", type=int, default=5, help="calls per block")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant first (compilation)")
    return p.parse_args(argv)


def _with_options(options: dict, build: Callable[[], Callable[[], object]]) -> Callable[[], object]:
    """Build (and warm) a variant while ``torch.compile`` carries ``options`` (the repo compiles at first call)."""
    original = torch.compile
    torch.compile = functools.partial(original, options=options) if options else original
    try:
        return build()
    finally:
        torch.compile = original


def _variant(args: argparse.Namespace) -> Callable[[], object]:
    common = ["--model", args.model, "--horizon", str(args.horizon)]
    if args.what == "plan":
        planner, td = plan_bench.build(plan_bench.parse_args(common))
        fn = functools.partial(plan_bench.call, planner, td)
    else:
        updater, batch = update_bench.build(update_bench.parse_args(common))
        fn = functools.partial(updater, batch)
    time_calls(fn, args.warmup, "cpu")
    return fn


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    with set_exploration_type(ExplorationType.RANDOM):
        a = _with_options({}, lambda: _variant(args))
        b = _with_options(options, lambda: _variant(args))
        times: dict[str, list[float]] = {"a": [], "b": []}
        for i in range(args.blocks):
            order = (("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))
            for name, fn in order:
                times[name].append(statistics.fmean(time_calls(fn, args.calls, "cpu")))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "compile_ab",
        "what": args.what,
        "model": args.model,
        "horizon": args.horizon,
        "threads": torch.get_num_threads(),
        "options_b": options,
        "a_median_ms": round(med["a"], 2),
        "b_median_ms": round(med["b"], 2),
        "a_range_ms": [round(min(times["a"]), 2), round(max(times["a"]), 2)],
        "b_range_ms": [round(min(times["b"]), 2), round(max(times["b"]), 2)],
        "b_over_a": round(med["b"] / med["a"], 3),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
