"""Time to train: the cpu protocol's schedule (g_resnext_cifar_tiny, CIFAR-10, 3 epochs, batch 128) run whole, exact vs
search-then-train vs cheaper gate gradients, next to the ResNeXt baseline -- wall time, accuracy, learned groups.

    python benchmarks/time_to_train.py --data-dir ../shared/data --out results/time-to-train
    python benchmarks/time_to_train.py --data-dir DATA --out DIR --device cuda --amp    # the same on a GPU

Runs that already finished in OUT are read, not trained again (so the script resumes). With ``--exact-from SWEEP`` the
exact runs of a cpu sweep (g-b32, g-b32-s1, ...) stand for the exact mode's seeds they have, for the accuracy
comparison (their wall times are not used: a sweep may share its machine); the other seeds train here, timed. Wall
time is the sum of the epochs' times in metrics.jsonl (training and evaluation, no start-up). Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from dgconv.cli import main as dgconv

SCHEDULE = ["--dataset", "cifar10", "--epochs", "3", "--batch-size", "128", "--lr", "0.1", "--weight-decay", "0.0005",
            "--no-progress"]
MODES = {
    "baseline": ["--model", "resnext_cifar_tiny", "--budget", "none", "--groups", "32"],
    "exact": ["--model", "g_resnext_cifar_tiny", "--budget", "32"],
    "freeze-0.3": ["--model", "g_resnext_cifar_tiny", "--budget", "32", "--freeze-groups-at", "0.3"],
    "gate-fraction-0.125": ["--model", "g_resnext_cifar_tiny", "--budget", "32", "--gate-batch-fraction", "0.125"],
}


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every mode but the baseline")
    ap.add_argument("--modes", nargs="+", default=["baseline", "exact", "freeze-0.3", "gate-fraction-0.125"])
    ap.add_argument("--exact-from", help="a cpu sweep whose g-b32 runs (g-b32, g-b32-s1, ...) stand for the exact "
                                         "mode's seeds they have (accuracy only: a sweep may share its machine)")
    args = ap.parse_args()
    out = Path(args.out)
    extra = ["--device", args.device, "--data-dir", args.data_dir] + (["--amp"] if args.amp else [])
    results: dict[str, list[dict]] = {}
    for mode in args.modes:
        for seed in [0] if mode == "baseline" else args.seeds:
            swept = Path(args.exact_from) / ("g-b32" + (f"-s{seed}" if seed else "")) if args.exact_from else None
            if mode == "exact" and swept is not None and (swept / "metrics.jsonl").exists() and len(rows(swept)) >= 3:
                r = rows(swept)  # the sweep's run of this seed: its accuracy counts, its wall time does not
                results.setdefault(mode, []).append({"seconds": None, "acc": r[-1]["test_acc"],
                                                     "groups": list(r[-1]["groups"].values()), "timed": False})
                continue
            run = out / f"{mode}-s{seed}"
            if not (run / "metrics.jsonl").exists() or len(rows(run)) < 3:
                code = dgconv(["train", *MODES[mode], *SCHEDULE, *extra, "--seed", str(seed), "--out", str(run)]
                              + (["--resume", str(run)] if (run / "last.pt").exists() else []))
                if code:
                    sys.exit(code)
            r = rows(run)
            results.setdefault(mode, []).append({"seconds": sum(m["time"] for m in r), "acc": r[-1]["test_acc"],
                                                 "groups": list(r[-1]["groups"].values()), "timed": True})
    base = statistics.fmean(x["seconds"] for x in results["baseline"])
    print("| mode | runs | wall time (s, timed runs) | x baseline | top-1 % (mean, sd) | learned groups per run |")
    print("|---|---:|---:|---:|---:|---|")
    for mode, rs in results.items():
        timed = [x["seconds"] for x in rs if x["timed"]]
        t = statistics.fmean(timed) if timed else None  # --exact-from without an exact run timed here
        accs = [100 * x["acc"] for x in rs]
        sd = f", {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        groups = "; ".join(" ".join(map(str, x["groups"])) for x in rs if x["groups"]) or "-"
        wall = f"{t:.0f} | {t / base:.2f}" if t is not None else "- | -"
        print(f"| {mode} | {len(rs)} | {wall} | {statistics.fmean(accs):.2f}{sd} | {groups} |")


if __name__ == "__main__":
    main()
