#!/usr/bin/env bash
# Second GPU call of the session: CIFAR throughput with and without dgconv.cached_gates, then the gpu protocol
# run one process at a time, with epochs chosen from the measured single-process throughput.
#
#   bash experiments/gpu_sweep_session.sh [DEADLINE_SECONDS]
#
# Writes into $OUT: checks.log, bench_cifar.log/.json, sweep.log, sweep_runs.tar.gz.
set -u
START=$(date +%s)
DEADLINE=${1:-390}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=python3
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
say() { echo "[$(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/checks.log"; }

say "unpack CIFAR-10"
$PY experiments/cifar_webp.py unpack .devdata/cifar10_webp.npz /tmp/data >> "$OUT/checks.log" 2>&1 || { say "unpack FAILED"; exit 1; }
say "CIFAR throughput"
timeout 90 $PY benchmarks/bench_network.py --device cuda --amp --channels-last --only cifar29 --cifar-batch 256 --reps 5 \
    --json "$OUT/bench_cifar.json" > "$OUT/bench_cifar.log" 2>&1
say "CIFAR throughput rc=$?"
EPOCHS=$($PY - "$OUT/bench_cifar.json" "$(left)" 2>> "$OUT/checks.log" <<'PYEOF'
import json, math, sys
t = json.load(open(sys.argv[1]))["cifar29"]
left = float(sys.argv[2])
g = math.sqrt(t["g29 random cached"] * t["g29 @32"]) / 256  # s/image, between learned-like and contiguous groups
plain = t["resnext29"] / 256
per_epoch = 50000 * (6 * g + 3 * plain)                      # the 9 runs, one after another
budget = left - 9 * 12 - 30                                   # start-up and test evaluation per run, rendering
print(max(1, min(40, math.floor(budget / per_epoch))))
print(f"per full sweep epoch {per_epoch:.0f}s, {left:.0f}s left", file=sys.stderr)
PYEOF
)
say "sweep: $EPOCHS epochs, $(left)s left"
NOTE="GPU protocol data: the shared copy's test images bit-exact (lossless WebP); its training images re-encoded as WebP quality 95 (mean absolute pixel error 1.56/255) to fit the 64 MiB transfer to the GPU machine (experiments/cifar_webp.py)."
timeout $(( $(left) - 15 )) $PY -m dgconv sweep --protocol gpu --data-dir /tmp/data --out /tmp/gpu_sweep --epochs "$EPOCHS" \
    --data-note "$NOTE" > "$OUT/sweep.log" 2>&1
say "sweep rc=$?"
$PY -m dgconv results /tmp/gpu_sweep --out /tmp/gpu_sweep/results.md >> "$OUT/sweep.log" 2>&1
tar czf "$OUT/sweep_runs.tar.gz" --exclude='*.pt' -C /tmp gpu_sweep
say "done"
