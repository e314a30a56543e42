#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one command (the protocols: experiments/gpu_protocols.sh).
#
#   bash experiments/gpu_session.sh [DEADLINE_SECONDS]
#
# Needs: this repository and an NVIDIA GPU with PyTorch (pytest and hypothesis for the CUDA tests). Each stage has
# its own timeout inside DEADLINE_SECONDS. Writes into $OUT (default ./gpu_out; at most 8 files come back):
# checks.log, profile.log, bench_compile.log/.json, bench_latency.log/.json, bench_network.log/.json.
set -u
DEADLINE=${1:-420}
source "$(dirname "$0")/_session.sh"
stage() {  # stage NAME SECONDS COMMAND...: run with a timeout no later than the deadline
  local name=$1 limit=$2; shift 2
  local t=$(( limit < $(left) - 10 ? limit : $(left) - 10 ))
  if [ "$t" -lt 20 ]; then say "$name skipped: no time left"; return; fi
  say "$name (up to ${t}s)"
  timeout "$t" "$@"
  say "$name rc=$?"
}

environment

# Order: what no GPU session has run yet comes first (2026-11-29 measured the layer and train50/cifar29 sections).
stage "CUDA tests" 120 $PY -m pytest -q -x -p no:cacheprovider tests/test_cuda.py tests/test_compile.py >> "$OUT/checks.log" 2>&1
stage "profile" 90 $PY benchmarks/profile_train_step.py --device cuda --amp --channels-last --batch 64 --size 224 \
    --steps 3 --table 30 --top-other 15 > "$OUT/profile.log" 2>&1
stage "compile and memory" 150 $PY benchmarks/bench_network.py --device cuda --amp --channels-last --batch 64 --size 224 \
    --reps 5 --only compile --only memory50 --json "$OUT/bench_compile.json" > "$OUT/bench_compile.log" 2>&1
stage "latency tables" 90 $PY benchmarks/bench_latency.py --device cuda --dtype bfloat16 --batch 32 \
    --json "$OUT/bench_latency.json" > "$OUT/bench_latency.log" 2>&1
stage "network benchmark" 150 $PY benchmarks/bench_network.py --device cuda --amp --channels-last --batch 64 --size 224 \
    --infer-batch 32 --cifar-batch 256 --reps 5 --json "$OUT/bench_network.json" > "$OUT/bench_network.log" 2>&1
say "done"
