#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one command (the protocols: experiments/gpu_protocols.sh).
#
#   bash experiments/gpu_session.sh [DEADLINE_SECONDS]
#
# Needs: this repository and an NVIDIA GPU with PyTorch (pytest and hypothesis for the CUDA tests). Each stage has
# its own timeout inside DEADLINE_SECONDS. Writes into $OUT (default ./gpu_out; at most 8 files come back):
# checks.log, bench_plans.log/.json, bench_train50.log/.json, profile.log.
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

# Order (issue 21): the CUDA tests of every backward plan first (correctness before speed), then the plans on the
# G-ResNeXt-50 step against ResNeXt-50 32x4d (32 contiguous, 32 non-adjacent, random groups; --gate-every 4; the
# first step after a grouping change; peak memory per plan), then the older train-step table and a profile.
stage "CUDA tests" 120 $PY -m pytest -q -x -p no:cacheprovider tests/layer/test_cuda.py tests/layer/test_plans.py tests/layer/test_compile.py >> "$OUT/checks.log" 2>&1
stage "plans" 240 $PY benchmarks/bench_plans.py --device cuda --amp --channels-last --batch 64 --size 224 --reps 7 \
    --json "$OUT/bench_plans.json" > "$OUT/bench_plans.log" 2>&1
stage "train step" 120 $PY benchmarks/bench_network.py --device cuda --amp --channels-last --batch 64 --size 224 \
    --cudnn-benchmark --reps 5 --only train50 --json "$OUT/bench_train50.json" > "$OUT/bench_train50.log" 2>&1
stage "profile" 60 $PY benchmarks/profile_train_step.py --device cuda --amp --channels-last --batch 64 --size 224 \
    --cudnn-benchmark --cached-gates --groups random --steps 3 --table 30 --top-other 15 > "$OUT/profile.log" 2>&1
say "done"
