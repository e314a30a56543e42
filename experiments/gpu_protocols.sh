#!/usr/bin/env bash
# The GPU protocols of docs/results.md (issue: statistically powered GPU protocol), one GPU command per call, resumable.
#
#   bash experiments/gpu_protocols.sh DEADLINE_SECONDS [PROTOCOL ...]      # default protocols: gpu-fair gpu
#
# Needs: this repository with results/<protocol>/ as the last session left it (finished runs are skipped: only their
# JSON files are kept, so they travel), .devdata/cifar10_webp.npz (experiments/cifar_webp.py pack, carried), an
# NVIDIA GPU with PyTorch. Every protocol gets the time that is left; a run that would not finish before the
# deadline is not started (judged from the finished runs' wall times), and runs still going at the deadline stop
# at their last checkpoint and start again next time (their checkpoints are too large to bring back).
#
# Writes into $OUT (at most 8 files come back): checks.log, recipe.log, <protocol>.log for each protocol, results.tar.gz (every
# run directory without checkpoints, plus the rendered results). Back on the development machine:
#   tar xzf results.tar.gz -C . && dgconv results results/gpu-fast results/gpu ... --out docs/results.md --figures docs/figures
set -u
DEADLINE=${1:-450}
shift || true
PROTOCOLS=${*:-gpu-fair gpu}
source "$(dirname "$0")/_session.sh"
NOTE="GPU protocol data: the shared copy's test images bit-exact (lossless WebP); its training images re-encoded as WebP quality 95 (mean absolute pixel error 1.56/255) to fit the 64 MiB transfer to the GPU machine (experiments/cifar_webp.py)."

environment
say "unpack CIFAR-10"
$PY experiments/cifar_webp.py unpack .devdata/cifar10_webp.npz /tmp/data >> "$OUT/checks.log" 2>&1 || { say "unpack FAILED"; exit 1; }

# Issue 20: the recipe ablation first (dense FastNet, each ported ingredient, 3 seeds; about a minute on an H200), so
# that the next recipe is chosen from measurements; then the protocols.
if [ "${ABLATION:-1}" = 1 ] && [ "$(left)" -gt 200 ]; then
  say "recipe ablation"
  timeout 150 $PY experiments/recipe_ablation.py --data-dir /tmp/data --out results/recipe-ablation --parallel 4 \
      > "$OUT/recipe.log" 2>&1
  say "recipe ablation rc=$?"
fi

for P in $PROTOCOLS; do
  REMAIN=$(( $(left) - 40 ))  # keep time to pack the results
  if [ "$REMAIN" -lt 30 ]; then say "no time left for $P"; continue; fi
  say "sweep $P with ${REMAIN}s"
  timeout $(( REMAIN + 30 )) $PY -m dgconv sweep --protocol "$P" --data-dir /tmp/data --out "results/$P" \
      --deadline "$REMAIN" --data-note "$NOTE" > "$OUT/$P.log" 2>&1
  say "sweep $P rc=$?: $(grep -c ' done' "$OUT/$P.log") runs finished in this call"
done

tar czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='.lock' $(# Issue 20: the recipe ablation first (dense FastNet, each ported ingredient, 3 seeds; about a minute on an H200), so
# that the next recipe is chosen from measurements; then the protocols.
if [ "${ABLATION:-1}" = 1 ] && [ "$(left)" -gt 200 ]; then
  say "recipe ablation"
  timeout 150 $PY experiments/recipe_ablation.py --data-dir /tmp/data --out results/recipe-ablation --parallel 4 \
      > "$OUT/recipe.log" 2>&1
  say "recipe ablation rc=$?"
fi

for P in $PROTOCOLS; do [ -d "results/$P" ] && echo "results/$P"; done)
say "packed $(du -h "$OUT/results.tar.gz" | cut -f1)"
