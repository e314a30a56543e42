"""Image-folder defaults measured on folders of different kinds (built by `folder_kinds.py`, no download).

For each kind (pen-drawn 28x28 digits saved as grayscale and as RGB PNGs, scikit-learn's upscaled 8x8 digits,
CIFAR-10 at 32x32, 96x96 shapes), `dgconv train --dataset imagefolder --model g_resnext_cifar_tiny --budget 16
--epochs 5` runs with nothing else set (or with --flags added); this script records the size, channels and policy the
trainer chose, the seconds per epoch, the peak memory of the trainer and its data-loading workers together
(proportional set size, sampled from /proc: memory a forked worker shares with the trainer counts once), the train
and validation accuracy after each epoch. Each (kind, label) is one line of OUT/results.jsonl; a markdown table is
printed. Needs torchvision (and Pillow; scikit-learn for sk-digits; the CIFAR copy for cifar32).

    python benchmarks/bench_folder.py --out /tmp/folder_bench                      # every kind, the defaults
    python benchmarks/bench_folder.py --out /tmp/fb --kinds pen-digits-rgb --label warmup -- --warmup-epochs 1
    PYTHONPATH=/old/checkout/src python benchmarks/bench_folder.py --out /tmp/fb --label old   # another version
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folder_kinds import KINDS, build  # noqa: E402


def _tree_pss(pid: int) -> int:
    """Proportional set size (bytes) of a process and all its descendants: pages a forked data-loading worker
    shares with the trainer count once, not once per process (as summed RSS would)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        try:
            for line in Path(f"/proc/{q}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo += children.get(q, [])
    return total


def run_one(data: Path, run: Path, epochs: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "dgconv", "train", "--dataset", "imagefolder", "--data-dir", str(data), "--model",
           "g_resnext_cifar_tiny", "--budget", "16", "--epochs", str(epochs), "--out", str(run), "--no-progress", *extra]
    started = time.time()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_pss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    cfg = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    d = cfg["data"]
    return {"data": {k: d.get(k) for k in ("native_size", "image_size", "policy", "channels", "hflip", "workers",
                                            "batch_size")},
            "epoch_seconds": [r["time"] for r in rows], "train_acc": [r["train_acc"] for r in rows],
            "val_acc": [r["test_acc"] for r in rows], "peak_pss_gib": peak[0] / 2**30,
            "wall_s": time.time() - started, "device": cfg["environment"]["device_name"],
            "cores": cfg["environment"]["cpu_count"], "torch": cfg["environment"]["torch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--label", default="defaults", help="name of this setting in results.jsonl")
    ap.add_argument("extra", nargs="*", help="flags added to every dgconv train (after --)")
    args = ap.parse_args()
    out = Path(args.out)
    for kind in args.kinds:
        try:
            data = build(kind, out / "data" / kind)
        except (FileNotFoundError, ImportError) as e:
            print(f"skip {kind}: {e}")
            continue
        run = out / "runs" / f"{kind}-{args.label}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        r = {"kind": kind, "label": args.label, "flags": args.extra, **run_one(data, run, args.epochs, args.extra)}
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        d = r["data"]
        print(f"{kind:15} {args.label:10} {d['channels']}ch {d['image_size']}px {d['policy']:5} flip={d['hflip']!s:5} "
              f"b{d['batch_size']} val {' '.join(f'{100 * a:.1f}' for a in r['val_acc'])} train "
              f"{100 * r['train_acc'][-1]:.1f} s/epoch {max(r['epoch_seconds']):.0f} max, peak {r['peak_pss_gib']:.2f} GiB",
              flush=True)


if __name__ == "__main__":
    main()
