#!/usr/bin/env bash
# The GPU smoke checks (issue 33; docs/gpu.md): one printed line per check, "ok" or "FAIL", with its figures.
#
#   DEVICE=cuda bash benchmarks/gpu_check.sh [WORK_DIR]   # on a GPU: under 10 minutes on one H100-class card
#   DEVICE=cpu  bash benchmarks/gpu_check.sh [WORK_DIR]   # the same checks, small and eager, in a few minutes
#
# Checks: planner call and update, eager and compiled, for the 1m and 5m presets and 1 and 16 envs (ms, recompiles,
# peak GPU memory); a short Pendulum run with evaluations; its resume; a run with the memmap buffer; an offline run
# on a dataset exported from the Pendulum run; the run's checkpoint evaluated on the CPU. Logs: WORK_DIR/logs/.
# With DEVICE=cpu the compiled checks are skipped (a compile takes minutes on a small CPU; COMPILE=1 keeps them) and
# the planner, batch and step counts are cut down. Exit status: the number of failed checks.
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
WORK=${1:-$(mktemp -d -t gpu_check.XXXXXX)}
PY=${PYTHON:-python}
export PYTHONPATH=${PYTHONPATH:-$PWD}
mkdir -p "$WORK/logs"
FAILED=0

if [[ $DEVICE == cuda* ]]; then
  COMPILES=${COMPILE_MODES:-"eager compiled"}; MODELS=${MODELS:-"1m 5m"}
  BENCH=(--iters 20 --warmup 3)
  PLAN=()  # the preset's planner: 512 samples, 6 iterations
  STEPS=${STEPS:-3000}; SEED_STEPS=1000; BATCH=256; EVAL_EPISODES=5; OFFLINE_STEPS=2000; THREADS=4
  TRAIN_PLAN=()
else
  COMPILES=${COMPILE_MODES:-$([[ ${COMPILE:-0} == 1 ]] && echo "eager compiled" || echo eager)}; MODELS=${MODELS:-1m}
  BENCH=(--iters 3 --warmup 1 --threads 1)
  PLAN=(--samples 64 --pi-trajs 8 --elites 16 --iterations 2)
  STEPS=${STEPS:-150}; SEED_STEPS=100; BATCH=16; EVAL_EPISODES=1; OFFLINE_STEPS=20; THREADS=1
  TRAIN_PLAN=(planner.num_samples=32 planner.num_pi_trajs=4 planner.num_elites=8 planner.iterations=1)
fi
COMPILE_ON=$([[ $COMPILES == *compiled* ]] && echo true || echo false)
RUN="$WORK/pendulum"

# check NAME SUMMARY_PYTHON CMD...: runs CMD (log: logs/NAME.log); on success prints "ok NAME: <summary>", where
# SUMMARY_PYTHON is a Python expression over `log` (the log's text) and `work` (WORK_DIR)
check() {
  local name=$1 summary=$2; shift 2
  local log="$WORK/logs/$name.log" start=$SECONDS
  if "$@" >"$log" 2>&1; then
    local figures
    if figures=$("$PY" - "$log" "$WORK" <<EOF 2>>"$log"
import json, re, sys, csv, pathlib
log = pathlib.Path(sys.argv[1]).read_text(); work = pathlib.Path(sys.argv[2])
def last_json(text): return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
def rows(path): return list(csv.DictReader(open(path)))
print($summary)
EOF
    ); then
      echo "ok   $name: $figures ($((SECONDS - start)) s)"
      return
    fi
  fi
  FAILED=$((FAILED + 1))
  echo "FAIL $name: $(grep -v '^\s*$' "$log" | tail -n 1) (log: $log)"
}

echo "gpu_check: DEVICE=$DEVICE, $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'), work dir $WORK"

# --- planner calls and updates, eager and compiled (TORCH_LOGS=recompiles: each recompilation is one log line) ---
for model in $MODELS; do
  for mode in $COMPILES; do
    flag=$([[ $mode == compiled ]] && echo --compile || echo --no-compile)
    for envs in 1 16; do
      check "plan-$model-$envs-envs-$mode" \
        '"%s ms/call, %s ms/env, %s, %d recompiles, peak GPU %s MiB" % ((r := last_json(log))["median_ms"], r["ms_per_env"], r["precision"], log.count("Recompiling"), r.get("peak_gpu_mib", "-"))' \
        env TORCH_LOGS=recompiles "$PY" benchmarks/plan.py --model "$model" --envs "$envs" --device "$DEVICE" "$flag" \
        "${BENCH[@]}" "${PLAN[@]}"
    done
    check "update-$model-$mode" \
      '"%s ms/update (batch %s), %s, %d recompiles, peak GPU %s MiB" % ((r := last_json(log))["median_ms"], r["batch"], r["precision"], log.count("Recompiling"), r.get("peak_gpu_mib", "-"))' \
      env TORCH_LOGS=recompiles "$PY" benchmarks/update.py --model "$model" --device "$DEVICE" "$flag" --batch "$BATCH" \
      "${BENCH[@]}"
  done
done

# --- a short Pendulum run with evaluations, then its resume ---
TRAIN=(recipes/train.py task=Pendulum-v1 model=1m device="$DEVICE" threads=$THREADS progress=false buffer.size=$STEPS
       collector.seed_steps=$SEED_STEPS buffer.batch_size=$BATCH eval.episodes=$EVAL_EPISODES
       planner.compile=$COMPILE_ON optim.compile=$COMPILE_ON "${TRAIN_PLAN[@]}")
check pendulum-run \
  '"%s steps, eval returns %s, %d recompiles" % (rows(work / "pendulum/eval.csv")[-1]["step"], [round(float(r["episode_reward"]), 1) for r in rows(work / "pendulum/eval.csv")], log.count("Recompiling"))' \
  env TORCH_LOGS=recompiles "$PY" "${TRAIN[@]}" steps=$((STEPS * 2 / 3)) eval.freq=$((STEPS / 3)) \
  checkpoint_freq=$((STEPS / 3)) hydra.run.dir="$RUN"
check pendulum-resume \
  '"resumed at %s, now %s steps, final eval return %.1f, checkpoint holds %d CUDA RNG state(s)" % (re.search(r"resumed from .* at step (\d+)", log).group(1), rows(work / "pendulum/eval.csv")[-1]["step"], float(rows(work / "pendulum/eval.csv")[-1]["episode_reward"]), len(__import__("torch").load(sorted((work / "pendulum/checkpoints").glob("*.pt"))[-1], weights_only=True)["rng"]["cuda"]))' \
  "$PY" "${TRAIN[@]}" steps=$STEPS eval.freq=$((STEPS / 3)) resume="$RUN"

# --- the memmap buffer (TorchRL cannot memory-map on a GPU: the storage must stay on the CPU) ---
check memmap-run \
  '"%s steps, eval return %.1f, buffer files %.0f kB" % (rows(work / "memmap/eval.csv")[-1]["step"], float(rows(work / "memmap/eval.csv")[-1]["episode_reward"]), sum(f.stat().st_size for f in (work / "memmap/buffer").rglob("*") if f.is_file()) / 1e3)' \
  "$PY" "${TRAIN[@]}" steps=$((SEED_STEPS + 20)) eval.freq=0 buffer.storage=memmap hydra.run.dir="$WORK/memmap"

# --- offline training on a dataset exported from the Pendulum run ---
check offline-export '"%s" % log.strip().splitlines()[-1]' \
  "$PY" -m tdmpc2_trl.data.offline_dataset export "$RUN" --out "$WORK/dataset"
check offline-run \
  '"%s updates, loss %s" % (rows(work / "offline/train.csv")[-1]["step"], round(float(rows(work / "offline/train.csv")[-1]["total_loss"]), 3))' \
  "$PY" recipes/train_offline.py dataset="$WORK/dataset" model=1m steps=$OFFLINE_STEPS device="$DEVICE" threads=$THREADS \
  progress=false eval.freq=0 buffer.batch_size=$BATCH planner.compile=false optim.compile=$COMPILE_ON \
  hydra.run.dir="$WORK/offline"

# --- the run's checkpoint (written on DEVICE) evaluated on the CPU ---
check eval-on-cpu '"mean return %.1f over %d episode(s)" % (last_json(log)["mean_return"], '"$EVAL_EPISODES"')' \
  env OMP_NUM_THREADS=$THREADS "$PY" recipes/eval.py checkpoint="$RUN" device=cpu episodes=$EVAL_EPISODES compile=false

echo "gpu_check: $FAILED check(s) failed"
exit $FAILED
