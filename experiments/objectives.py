"""Does the budget bind by learning or only by the epoch-end projection? The paper's objective vs the lagrangian.

Trains the same configuration under ``--objective paper`` and ``--objective lagrangian`` and counts, from each run's
metrics.jsonl, the epochs in which the projection still had to close gates, how many it closed, and zeta/o before
projection. Run directories go under OUT (kept: they are the record behind docs/guide.md "Which budget?").

    python experiments/objectives.py --setting digits --out results/objectives        # the digits default, ~2 min
    python experiments/objectives.py --setting cpu --data-dir ../shared/data --out results/objectives   # ~20 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dgconv.cli import main as dgconv

SETTINGS = {
    # the README's main job: g_resnext_digits, b = 8, 30 epochs
    "digits": [],
    # the cpu protocol's G-ResNeXt at b = 32 (connections and MACs), its schedule (3 epochs, batch 128, wd 5e-4)
    "cpu": ["--dataset", "cifar10", "--model", "g_resnext_cifar_tiny", "--budget", "32", "--epochs", "3",
            "--batch-size", "128", "--lr", "0.1", "--weight-decay", "0.0005", "--device", "cpu"],
}


def summarize(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    closed = [len(r["gates_closed_by_projection"]) for r in rows]
    return {
        "epochs": len(rows),
        "epochs_with_projection": sum(c > 0 for c in closed),
        "gates_closed": sum(closed),
        "max_zeta_over_o_before_projection": max(r["zeta_before_projection"] / r["o"] for r in rows),
        "final_zeta_over_o": rows[-1]["zeta_over_o"],
        "test_acc": rows[-1]["test_acc"],
        "groups": list(rows[-1]["groups"].values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--costs", nargs="+", default=["connections"])
    args = ap.parse_args()
    extra = SETTINGS[args.setting] + (["--data-dir", args.data_dir] if args.data_dir else [])
    print("| setting | cost | objective | epochs | epochs the projection closed gates | gates closed | "
          "max zeta/o before projection | final zeta/o | test acc | learned groups |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for cost in args.costs:
        for objective in ("paper", "lagrangian"):
            run = Path(args.out) / f"{args.setting}-{cost}-{objective}"
            if not (run / "last.pt").exists():
                code = dgconv(["train", *extra, "--cost", cost, "--objective", objective, "--out", str(run), "--no-progress"])
                if code:
                    raise SystemExit(code)
            s = summarize(run)
            print(f"| {args.setting} | {cost} | {objective} | {s['epochs']} | {s['epochs_with_projection']} | "
                  f"{s['gates_closed']} | {s['max_zeta_over_o_before_projection']:.3f} | {s['final_zeta_over_o']:.3f} | "
                  f"{100 * s['test_acc']:.2f} | {' '.join(map(str, s['groups']))} |", flush=True)


if __name__ == "__main__":
    main()
