#!/usr/bin/env bash
# One sitting of the issue-14 comparison: the official TD-MPC2 (compiled) and this project (defaults), one process
# per figure, alternating case by case, with the matmul ceiling at the start of each round.
#
#   OFFICIAL_SRC=DIR/cpu_src THREADS=2 ROUNDS=2 bash benchmarks/side_by_side.sh     # from the project root, venv active
#
# OFFICIAL_SRC: the official sources patched for a CPU (../shared/bench-official/setup.sh makes them; unset: project
# only). MODELS ["1m 5m"], THREADS ["2"], ROUNDS [2], SEED [1: also the 8m-h10 H=10 plan and update, project only],
# OUT [side_by_side_<time>.jsonl]. PAUSE="pattern": processes (pgrep -f) and all their descendants (env workers,
# inductor's compile workers and their compilers) paused with SIGSTOP for the sitting and resumed at its end,
# e.g. PAUSE="recipes/(train|benchmark)" for training runs sharing the machine.
# Prints one line per figure (tag, median ms, GFLOP/s); every JSON line goes to OUT with its "tag".
set -u
OUT=${OUT:-side_by_side_$(date +%Y%m%d_%H%M%S).jsonl}
BENCH_OFFICIAL=${BENCH_OFFICIAL:-../shared/bench-official/bench_official.py}
tree() {  # tree PID...: the PIDs and all their descendants (a run's env workers, inductor's compile workers, gcc)
  local p
  for p in "$@"; do echo "$p"; tree $(pgrep -P "$p"); done
}
if [ -n "${PAUSE:-}" ]; then
  PAUSED=$(tree $(pgrep -f "$PAUSE" | grep -vx "$$") | sort -u)
  [ -n "$PAUSED" ] && kill -STOP $PAUSED
  trap '[ -n "$PAUSED" ] && kill -CONT $PAUSED 2>/dev/null' EXIT
fi
run() {  # run TAG CMD...: append CMD's JSON lines to OUT, tagged; print each one's median and GFLOP/s
  local tag=$1; shift
  "$@" 2>/dev/null | grep '^{' | python -c "
import json, sys
seen = False
for line in sys.stdin:
    d, seen = {**json.loads(line), 'tag': sys.argv[1]}, True
    print(json.dumps(d))
    what = ' '.join(str(d[k]) for k in ('precision', 'rows') if k in d and d.get('benchmark') == 'matmul_peak')
    print(f\"{sys.argv[1]} {what}: {d.get('median_ms')} ms, {d.get('gflops')} GFLOP/s\", file=sys.stderr)
if not seen:
    print(f\"{sys.argv[1]}: FAILED (no JSON line; rerun its command to see why)\", file=sys.stderr)" "$tag" >> "$OUT"
}
for T in ${THREADS:-2}; do
  for r in $(seq 1 "${ROUNDS:-2}"); do
    run "peak T$T r$r" python benchmarks/matmul_peak.py --threads "$T" --rows 512 --precisions bf16 fp32
    for m in ${MODELS:-1m 5m}; do
      for w in plan update; do
        [ -n "${OFFICIAL_SRC:-}" ] && run "official $w $m T$T r$r" \
          python "$BENCH_OFFICIAL" --what $w --model "$m" --horizon 3 --threads "$T" --iters 10 --warmup 2 --compile
        if [ $w = plan ]; then run "project $w $m T$T r$r" python benchmarks/plan.py --model "$m" --horizon 3 --threads "$T"
        else run "project $w $m T$T r$r" python benchmarks/update.py --model "$m" --horizon 3 --batch 256 --threads "$T"; fi
      done
    done
    if [ -n "${SEED-1}" ]; then
      run "project plan 8m-h10 T$T r$r" python benchmarks/plan.py --model 8m-h10 --horizon 10 --threads "$T" --iters 5
      run "project update 8m-h10 T$T r$r" python benchmarks/update.py --model 8m-h10 --horizon 10 --batch 256 \
        --threads "$T" --iters 5
    fi
  done
done
echo "done: $OUT" >&2
