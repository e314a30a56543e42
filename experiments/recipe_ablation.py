"""The fast recipe, ingredient by ingredient (issue 20): dense FastNet under gpu-fast's recipe, then with each ported
ingredient added alone, then with all of them; several seeds each; a table of mean accuracy with its 95 % interval
and seconds per run.

    python experiments/recipe_ablation.py --data-dir DATA --out results/recipe-ablation --seeds 0 1 2 --parallel 4
    python experiments/recipe_ablation.py --data-dir ../shared/data --out /tmp/abl --device cpu --rehearse   # CPU

Finished runs are kept and skipped when the script runs again (each is an ordinary run directory); a run that did not
finish shows as missing, never as a number. Ingredients not ported yet are listed in INGREDIENTS_NOT_PORTED.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dgconv.lab.protocols import PROTOCOLS, common_options  # noqa: E402
from dgconv.lab.stats import summarize  # noqa: E402
from dgconv.train.options import to_flags  # noqa: E402

#: name -> the flags it adds to gpu-fast's dense FastNet run
INGREDIENTS: dict[str, list[str]] = {
    "gpu-fast recipe": [],
    "+ lookahead ramp t^3": ["--lookahead-ramp"],
    "+ lookahead over BN statistics": ["--lookahead-ramp", "--lookahead-buffers"],
    "+ BN scales frozen, biases 64x lr": ["--freeze-norm-scale", "--norm-bias-lr-scale", "64"],
    "+ 6-view TTA": ["--tta", "flip-shift"],
}
INGREDIENTS["all of the above"] = ["--lookahead-ramp", "--lookahead-buffers", "--freeze-norm-scale",
                                   "--norm-bias-lr-scale", "64", "--tta", "flip-shift"]
INGREDIENTS_NOT_PORTED = ("partial identity (Dirac) initialisation", "flips alternating per epoch", "reflection padding",
                          "whitening bias trained for the first 3 epochs only", "a schedule ending above zero")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--device", default=None)
    ap.add_argument("--rehearse", action="store_true", help="1 epoch on 256 images, no AMP (a CPU check of the script)")
    args = ap.parse_args()
    p = PROTOCOLS["gpu-fast"]
    base = {**common_options(p), "model": p.plain, "budget": None, "groups": 1}
    if args.device:
        base["device"] = args.device
    if args.rehearse:
        base.update(epochs=1, limit_train=256, limit_test=128, batch_size=64, amp=False, warmup_epochs=0.2)
    out = Path(args.out)
    jobs = []
    for name, flags in INGREDIENTS.items():
        for seed in args.seeds:
            run = out / f"{_slug(name)}-s{seed}"
            cmd = [sys.executable, "-m", "dgconv", "train", *to_flags({**base, "seed": seed}), *flags,
                   "--data-dir", args.data_dir, "--out", str(run)]
            jobs.append((name, run, cmd))

    def go(job):  # type: ignore[no-untyped-def]
        name, run, cmd = job
        rows = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if rows and len(rows) >= base["epochs"]:
            return
        if run.exists():
            cmd = [sys.executable, "-m", "dgconv", "train", "--resume", str(run), "--no-progress"]
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(f"{run.name}: exit {r.returncode} in {time.time() - t:.0f} s" + (f"\n{r.stderr[-800:]}" if r.returncode else ""),
              flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(go, jobs))
    print("\n| recipe | seeds | top-1 % mean | 95 % CI | train top-1 % | s / run |\n|---|---:|---:|---|---:|---:|")
    for name in INGREDIENTS:
        accs, train, secs, missing = [], [], [], 0
        for seed in args.seeds:
            path = out / f"{_slug(name)}-s{seed}" / "metrics.jsonl"
            rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
            if len(rows) < base["epochs"]:
                missing += 1
                continue
            accs.append(rows[-1]["test_acc"])
            train.append(rows[-1]["train_acc"])
            secs.append(sum(r["time"] for r in rows))
        if not accs:
            print(f"| {name} | 0 | missing | | | |")
            continue
        z = summarize(accs)
        ci = "-" if z.ci is None else f"[{100 * z.ci[0]:.2f}, {100 * z.ci[1]:.2f}]"
        print(f"| {name} | {len(accs)}{f' ({missing} missing)' if missing else ''} | {100 * z.mean:.2f} | {ci} | "
              f"{100 * sum(train) / len(train):.2f} | {sum(secs) / len(secs):.1f} |")
    print(f"\nNot ported yet: {'; '.join(INGREDIENTS_NOT_PORTED)}.")


if __name__ == "__main__":
    main()
