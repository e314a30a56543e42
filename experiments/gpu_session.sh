#!/usr/bin/env bash
# One prepared GPU session (how docs/performance.md's GPU tables and docs/results.md's gpu protocol were made).
#
#   bash experiments/gpu_session.sh [DEADLINE_SECONDS]
#
# Needs: this repository, .devdata/cifar10_webp.npz (experiments/cifar_webp.py pack), an NVIDIA GPU with
# PyTorch, torchvision, Pillow, scikit-learn, matplotlib, pytest and hypothesis installed. Writes into $OUT
# (default ./gpu_out): checks.log, bench_layer.log/.json, bench_network.log/.json, sweep.log, sweep_runs.tar.gz.
# Stages run in order; the full sweep only starts if a one-epoch miniature sweep (10,240 training images per run,
# the same 7 runs at a time) passed. That miniature sweep is also the calibration: the full sweep's epochs are
# chosen from its measured epoch times under the same contention, so that everything ends before DEADLINE_SECONDS.
set -u
START=$(date +%s)
DEADLINE=${1:-550}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=python3
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
say() { echo "[$(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/checks.log"; }

say "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, torchvision, sys; print(sys.version); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; } >> "$OUT/checks.log" 2>&1

say "unpack CIFAR-10"
$PY experiments/cifar_webp.py unpack .devdata/cifar10_webp.npz /tmp/data >> "$OUT/checks.log" 2>&1 || { say "unpack FAILED"; exit 1; }

say "CUDA tests"
timeout 150 $PY -m pytest -q -x -p no:cacheprovider tests/test_cuda.py tests/test_layers.py tests/test_fast.py >> "$OUT/checks.log" 2>&1
say "CUDA tests rc=$?"

say "imagefolder smoke run (torchvision)"
$PY experiments/make_folder_dataset.py /tmp/folder >> "$OUT/checks.log" 2>&1
timeout 90 $PY -m dgconv train --dataset imagefolder --data-dir /tmp/folder --model g_resnext50 --epochs 1 --batch-size 16 \
    --workers 4 --device cuda --amp --channels-last --out /tmp/folder_run --no-progress >> "$OUT/checks.log" 2>&1
say "imagefolder rc=$?"

say "layer benchmark"
timeout 150 $PY benchmarks/bench_layer.py --device cuda --amp --channels-last --batch 64 --reps 7 \
    --json "$OUT/bench_layer.json" > "$OUT/bench_layer.log" 2>&1
say "layer benchmark rc=$?"
say "network benchmark"
timeout 150 $PY benchmarks/bench_network.py --device cuda --amp --channels-last --batch 64 --size 224 --infer-batch 32 \
    --cifar-batch 256 --reps 5 --json "$OUT/bench_network.json" > "$OUT/bench_network.log" 2>&1
say "network benchmark rc=$?"

say "miniature sweep (1 epoch, 10240 images per run): does the protocol run here, and how fast?"
timeout 150 $PY -m dgconv sweep --protocol gpu --data-dir /tmp/data --out /tmp/mini --epochs 1 --limit-train 10240 \
    --limit-test 2000 > "$OUT/sweep.log" 2>&1
MINI=$?
DONE=$(grep -c " done" "$OUT/sweep.log")
say "miniature sweep rc=$MINI, $DONE runs done"
if [ "$MINI" -ne 0 ] || [ "$DONE" -ne 9 ]; then
    tar czf "$OUT/sweep_runs.tar.gz" --exclude='*.pt' -C /tmp mini 2>/dev/null
    say "stopping: the miniature sweep failed"
    exit 1
fi

EPOCHS=$($PY experiments/sweep_epochs.py /tmp/mini 10240 "$(left)" 2>> "$OUT/checks.log")
say "full sweep: $EPOCHS epochs, $(left)s left"
if [ "$(left)" -lt 120 ]; then say "stopping: too little time left for the full sweep"; exit 1; fi
NOTE="GPU protocol data: the shared copy's test images bit-exact (lossless WebP); its training images re-encoded as WebP quality 95 (mean absolute pixel error 1.56/255) to fit the 64 MiB transfer to the GPU machine (experiments/cifar_webp.py)."
timeout $(( $(left) - 25 )) $PY -m dgconv sweep --protocol gpu --data-dir /tmp/data --out /tmp/gpu_sweep --epochs "$EPOCHS" \
    --data-note "$NOTE" >> "$OUT/sweep.log" 2>&1
say "full sweep rc=$?"
$PY -m dgconv results /tmp/gpu_sweep --out /tmp/gpu_sweep/results.md >> "$OUT/sweep.log" 2>&1
tar czf "$OUT/sweep_runs.tar.gz" --exclude='*.pt' --exclude='tensorboard' -C /tmp gpu_sweep mini
say "done"
