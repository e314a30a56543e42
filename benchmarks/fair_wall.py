"""The cpu-fair search-then-train schedule's wall time at this commit, against its hand-set arm, from committed runs.

The cpu-fair sweep runs at a fixed commit (its runs' ``config.json`` name it), so its wall times show that commit's
costs. This replays chosen runs of a cpu-fair sweep at *this* checkout -- the learned arm with the channel orders
folded (``--orders fold``, the default since 0.3) and with 0.2's gathers (``--orders gather``, what the sweep ran),
and the contiguous arm -- round-robin, ``--rounds`` times, each a whole ``dgconv train`` process (start-up
included, as the sweep's own wall times are). Prints each run's wall time and the median over rounds of the
per-round ratio against the contiguous arm. Each replay's metrics are compared with the committed run's: the
``gather`` replay must match bit for bit (it is the same run), the ``fold`` one is reported (a folded order adds
the same numbers in another order, so it may differ in the last bits and, through training, in accuracy).

    python benchmarks/fair_wall.py results/cpu-fair --learned g-macs-b16 --hand fastnet-g16 --rounds 2 --out /tmp/fw
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dgconv.train.runs import read_metrics

WALL_KEYS = ("time", "seconds", "wall")


def metrics(run: Path) -> list[dict]:
    """A run's metrics without its wall times (what a replay must reproduce)."""
    return [{k: v for k, v in r.items() if not any(w in k for w in WALL_KEYS)} for r in read_metrics(run)]


def replay(run: Path, out: Path, extra: list[str]) -> float:
    """Seconds of one whole ``dgconv train --config RUN/config.json`` process."""
    cmd = [sys.executable, "-m", "dgconv", "train", "--config", str(run / "config.json"), "--out", str(out),
           "--no-progress", *extra]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--learned", default="g-macs-b16", help="a learned arm's run directory in the sweep")
    ap.add_argument("--hand", default="fastnet-g16", help="the hand-set arm's run directory in the sweep")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="a new folder for the replays")
    a = ap.parse_args()
    cands = {"hand": (a.sweep / a.hand, []),
             "learned, fold": (a.sweep / a.learned, ["--orders", "fold"]),
             "learned, 0.2 gather": (a.sweep / a.learned, ["--orders", "gather"])}
    for run, _ in cands.values():
        if not (run / "config.json").is_file():
            ap.error(f"{run} has no config.json")
    walls: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(a.rounds):
        for k, (run, extra) in cands.items():
            out = a.out / f"{k.replace(', ', '-').replace(' ', '_')}-r{r}"
            walls[k].append(replay(run, out, extra))
            same = metrics(out) == metrics(run)
            acc = metrics(out)[-1]["test_acc"]
            print(f"round {r}: {k:<20} {walls[k][-1]:7.1f} s  test_acc {acc:.4f}  "
                  f"{'same metrics as the committed run' if same else 'metrics differ from the committed run'}",
                  flush=True)
    print(f"\n{a.sweep.name}: {a.learned} against {a.hand}, {a.rounds} rounds (whole processes, start-up included)")
    print("| replay | wall s (median) | x hand-set arm (median of per-round ratios) |")
    print("|---|---:|---:|")
    for k, w in walls.items():
        ratio = statistics.median(x / h for x, h in zip(w, walls["hand"]))
        print(f"| {k} | {statistics.median(w):.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
