"""The machine's matmul ceiling: GFLOP/s of one ``x @ W`` at the planner's and updater's shapes, fp32 and bf16.

    python benchmarks/matmul_peak.py --threads 1 2 --rows 512 12288 --dims 512

Prints one JSON line per (precision, threads, rows, dim): the planner and the updater cannot run faster than these
(their time is mostly such matmuls), so they bound what ``plan.py`` / ``update.py`` can reach on this machine.
"""

from __future__ import annotations

import argparse
import json

from tdmpc2_trl.platform.process import tune_process

tune_process()  # before torch: the OpenMP wait and the allocator, as the recipes set them
import torch
from _common import time_calls, timing_fields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[512, 12288],
        help="rows of x (512: one env's 512 candidates; 12288: 24 envs' candidates in one call)",
    )
    p.add_argument("--dims", type=int, nargs="+", default=[512], help="square W sizes (the networks' widths)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for precision in args.precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for threads in args.threads:
            torch.set_num_threads(threads)
            for rows in args.rows:
                for dim in args.dims:
                    x = torch.randn(rows, dim, device=args.device, dtype=dtype)
                    w = torch.randn(dim, dim, device=args.device, dtype=dtype)
                    time_calls(lambda x=x, w=w: x @ w, 3, args.device)
                    ms = time_calls(lambda x=x, w=w: x @ w, args.iters, args.device)
                    print(
                        json.dumps(
                            {
                                "benchmark": "matmul_peak",
                                "precision": precision,
                                "threads": threads,
                                "rows": rows,
                                "dim": dim,
                                **timing_fields(ms, 2 * rows * dim * dim, "call"),
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
