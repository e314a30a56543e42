"""Commit the finished runs of a sweep directory (default results/cpu-fair): every run directory that finished all
its epochs, plus the sweep's own files (sweep.json, walls.jsonl, hand-set group specs). Unfinished runs stay out of
git (their checkpoints are ignored anyway, so a committed half-run could not be resumed).

    python experiments/commit_finished.py [SWEEP_DIR] [--dry-run]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def finished(run: Path) -> bool:
    try:
        epochs = json.loads((run / "config.json").read_text())["config"]["epochs"]
        rows = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, KeyError, ValueError):
        return False
    return len(rows) >= int(epochs)


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    args = [a for a in argv if a != "--dry-run"]
    sweep = Path(args[0] if args else "results/cpu-fair")
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and finished(p))
    files = [p for p in sweep.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl", ".md")]
    paths = [str(p) for p in runs + files]
    if dry:
        print("\n".join(paths))
        return 0
    subprocess.run(["git", "add", "--", *paths], check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--name-only", "--", str(sweep)], capture_output=True,
                            text=True, check=True).stdout.split()
    new = sorted({Path(p).relative_to(sweep).parts[0] for p in staged if len(Path(p).relative_to(sweep).parts) > 1})
    if not staged:
        print("nothing new")
        return 0
    message = f"{sweep.name}: {len(runs)} finished runs ({len(new)} new: {', '.join(new[:6])}{' ...' if len(new) > 6 else ''})"
    subprocess.run(["git", "commit", "-q", "-m", message, "--", str(sweep)], check=True)
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
