#!/usr/bin/env bash
# Every CPU measurement of docs/performance.md (and the ecosystem/fine-tuning numbers of docs/guide.md), on a quiet
# machine, into benchmarks/results/cpu-<commit>/. Usage: bash benchmarks/run_cpu.sh [VISION_PYTHON]
# VISION_PYTHON: a Python whose environment has torchvision (for the image-folder benchmark; skipped without it).
set -u
cd "$(dirname "$0")/.."
OUT=benchmarks/results/cpu-$(git rev-parse --short HEAD)
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
VPY=${1:-}
lscpu > "$OUT/machine.txt"
{ echo "started $(date -u)"; $PY -c "import torch; print('torch', torch.__version__, torch.get_num_threads(), 'threads')"; } >> "$OUT/machine.txt"
run() { local name=$1 rc; shift; echo "[$(date +%T)] $name"; "$@" > "$OUT/$name.log" 2>&1; rc=$?; echo "[$(date +%T)] $name rc=$rc"; }
run bench_layer $PY benchmarks/bench_layer.py --repeat 5 --json "$OUT/bench_layer.json"
run bench_network $PY benchmarks/bench_network.py --only train50 --only memory50 --only infer50 --reps 7 --json "$OUT/bench_network.json"
run bench_compile $PY benchmarks/bench_network.py --only compile --reps 7 --json "$OUT/bench_compile.json"
run profile_train_step $PY benchmarks/profile_train_step.py --steps 3
run bench_latency $PY benchmarks/bench_latency.py --json "$OUT/bench_latency.json"
run finetune_first_step $PY experiments/finetune.py first-step
if [ -n "$VPY" ]; then run bench_folder "$VPY" benchmarks/bench_folder.py --out /tmp/folder_bench; fi
echo "finished $(date -u)" >> "$OUT/machine.txt"
