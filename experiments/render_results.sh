#!/usr/bin/env bash
# Regenerate docs/results.md (and docs/figures) from the runs committed at HEAD, in a clean worktree, so that run
# directories still being written by a sweep in this checkout never leak into the document CI checks.
#   bash experiments/render_results.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
git -C "$repo" worktree add --detach -q "$tmp/wt" HEAD
trap 'git -C "$repo" worktree remove --force "$tmp/wt"; rm -rf "$tmp"' EXIT
sweeps=$(python3 -c "import ast,re;s=open('$repo/tests/test_docs.py').read();print(' '.join('results/'+x for x in ast.literal_eval(re.search(r'^RESULTS = (\[.*?\])', s, re.M).group(1))))")
py="${PYTHON:-$repo/.venv/bin/python}"; [[ -x "$py" ]] || py=python3
cd "$tmp/wt"
PYTHONPATH="$tmp/wt/src" "$py" -m dgconv results $sweeps --out "$tmp/results.md" --figures "$tmp/figures"
cp "$tmp/results.md" "$repo/docs/results.md"
cp "$tmp/figures/"*.png "$repo/docs/figures/"
echo "docs/results.md rendered from HEAD ($(git -C "$repo" rev-parse --short HEAD)): $sweeps"
