"""The cost of one other busy process: a benchmark run alone, then next to a CPU-bound busy loop, alternating.

    python benchmarks/contention.py --rounds 3 -- benchmarks/update.py --model 1m --horizon 3 --threads 2

Each round runs the benchmark command (any script here that prints a JSON line with ``median_ms``) once on a quiet
machine and once while one extra process spins on a core (a pure-Python loop: what a second training run or a test
suite looks like to the scheduler). Prints one JSON line per run and a summary line with the busy / quiet ratios.
Pause other work first (``side_by_side.sh``'s ``PAUSE``, or SIGSTOP).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

BUSY_LOOP = "while True: pass"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="quiet/busy pairs")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...] (run with this Python)")
    args = p.parse_args(argv)
    args.command = [a for a in args.command if a != "--"] or [
        "benchmarks/update.py",
        "--model",
        "1m",
        "--horizon",
        "3",
        "--threads",
        "2",
    ]
    return args


def median_ms(command: list[str]) -> float:
    """Run ``command`` with this Python; the ``median_ms`` of the last JSON line it prints."""
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{' '.join(command)} printed no JSON line")
    return float(json.loads(lines[-1])["median_ms"])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet, busy = [], []
    for r in range(1, args.rounds + 1):
        quiet.append(median_ms(args.command))
        print(json.dumps({"round": r, "load": "quiet", "median_ms": quiet[-1]}), flush=True)
        spinner = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            busy.append(median_ms(args.command))
        finally:
            spinner.kill()
            spinner.wait()
        print(json.dumps({"round": r, "load": "one busy process", "median_ms": busy[-1]}), flush=True)
    ratios = [b / q for q, b in zip(quiet, busy)]
    summary = {
        "benchmark": "contention",
        "command": " ".join(args.command),
        "quiet_ms": quiet,
        "busy_ms": busy,
        "busy_over_quiet": [round(x, 2) for x in ratios],
        "median_ratio": round(statistics.median(ratios), 2),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
