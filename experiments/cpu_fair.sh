#!/usr/bin/env bash
# Run (or resume) protocol cpu-fair in the background from its own worktree and environment at a fixed commit, so
# that edits to the package never change a sweep in flight. Runs land in results/cpu-fair of this checkout; commit
# the finished ones (experiments/commit_finished.py) as they come.
#
#   bash experiments/cpu_fair.sh [COMMIT]    # default: the commit recorded by the runs already in results/cpu-fair
#
# The sweep runs one run at a time on one thread (the protocol says so); its log is $SWEEP_HOME/sweep.log.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/results/cpu-fair"
data="${CIFAR_DIR:-$repo/../shared/data}"
commit="${1:-}"
if [[ -z "$commit" ]]; then
  commit=$(python3 - "$out" <<'PY'
import json, pathlib, sys
for c in sorted(pathlib.Path(sys.argv[1]).glob("*/config.json")):
    sha = (json.loads(c.read_text()).get("environment") or {}).get("commit") or ""
    if sha and not sha.endswith("+dirty"):
        print(sha); break
PY
)
fi
[[ -n "$commit" ]] || { echo "cpu_fair.sh: give the commit to run at (no finished run records one yet)" >&2; exit 2; }
home="${SWEEP_HOME:-$repo/../sweep-cpu-fair-${commit:0:7}}"
if [[ ! -d "$home/src" ]]; then
  git -C "$repo" worktree add --detach "$home" "$commit"
fi
if [[ ! -x "$home/.venv/bin/dgconv" ]]; then
  python3 -m venv "$home/.venv"
  "$home/.venv/bin/pip" install -q torch==2.13.0
  "$home/.venv/bin/pip" install -q -e "$home[train]" scipy
fi
cd "$home"
nohup "$home/.venv/bin/dgconv" sweep --protocol cpu-fair --data-dir "$data" --out "$out" \
  --data-note "CIFAR-10 rebuilt from a JPEG copy (not bit-exact; accuracies 0.5-2 points below the official files')" \
  >> "$home/sweep.log" 2>&1 &
echo "cpu-fair sweep started at $commit (PID $!); log: $home/sweep.log"
