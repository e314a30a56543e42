#!/usr/bin/env bash
# The test suite on a loaded machine: two busy-loop processes beside `python -m pytest -q`, on a clean copy of HEAD.
# Usage: bash benchmarks/run_loaded.sh [ROUNDS] [BUSY]   (defaults: 3 rounds, 2 busy processes)
# Prints each round's exit status and wall time; the CIFAR tests run when DGCONV_SHARED_DATA (or ../shared/data) has it.
set -u
cd "$(dirname "$0")/.."
repo=$(pwd)
rounds=${1:-3}
busy=${2:-2}
data=${DGCONV_SHARED_DATA:-$repo/../shared/data}
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null; rm -rf "$work"' EXIT
git archive HEAD | tar -x -C "$work"
for round in $(seq "$rounds"); do
  pids=()
  for _ in $(seq "$busy"); do python3 -c "while True: pass" & pids+=($!); done
  start=$(date +%s)
  (cd "$work" && DGCONV_SHARED_DATA=$data PYTHONPATH=$work/src "$python" -m pytest -q -p no:cacheprovider \
      > "$work/round$round.log" 2>&1)
  rc=$?
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
  echo "round $round: exit $rc, $(( $(date +%s) - start )) s, $(tail -1 "$work/round$round.log")"
  [ "$rc" = 0 ] || { tail -40 "$work/round$round.log"; exit 1; }
done
