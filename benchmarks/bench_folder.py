"""An image folder nobody tuned for: MNIST-sized (28x28 grayscale PNGs, 10 classes), trained with the CLI defaults.

No MNIST without a download, so the folder is built from scikit-learn's 1,797 digits: each 8x8 digit upscaled to
28x28 and randomly shifted, rotated (up to 10 degrees) and scaled (0.9-1.1) into 4,000 training and 1,000 validation
images -- distinct source digits in the two splits. Then `dgconv train --dataset imagefolder --model
g_resnext_cifar_tiny --epochs 5` runs with nothing else set; this script reports the size and policy the trainer chose,
the seconds per epoch, the peak memory of the trainer and its data-loading workers together (proportional set size,
sampled from /proc: memory a forked worker shares with the trainer counts once),
and the validation accuracy after each epoch. Needs torchvision (and Pillow).

    python benchmarks/bench_folder.py --out /tmp/folder_bench
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

import numpy as np


def build(root: Path, n_train: int = 4000, n_val: int = 1000, seed: int = 0) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.images))
    cut = int(0.8 * len(order))
    for split, idx, n in (("train", order[:cut], n_train), ("val", order[cut:], n_val)):
        for i in range(n):
            j = idx[i % len(idx)]
            img = Image.fromarray((d.images[j] * 255 / 16).astype(np.uint8)).resize((20, 20), Image.BILINEAR)
            img = img.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR)
            s = int(round(20 * rng.uniform(0.9, 1.1)))
            img = img.resize((s, s), Image.BILINEAR)
            canvas = Image.new("L", (28, 28))
            off = 14 - s // 2
            canvas.paste(img, (off + int(rng.integers(-2, 3)), off + int(rng.integers(-2, 3))))
            folder = root / split / str(d.target[j])
            folder.mkdir(parents=True, exist_ok=True)
            canvas.save(folder / f"{i}.png")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "val").exists():
        build(data)
    run = out / "run"
    cmd = [sys.executable, "-m", "dgconv", "train", "--dataset", "imagefolder", "--data-dir", str(data), "--model",
           "g_resnext_cifar_tiny", "--epochs", str(args.epochs), "--out", str(run), "--no-progress"]
    started = time.time()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
        sys.exit(proc.returncode)
    cfg = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    d = cfg["data"]
    print(f"\n# {cfg['environment']['device_name']}, {cfg['environment']['cpu_count']} cores, torch {cfg['environment']['torch']}")
    print(f"data: native {d['native_size']}, trained at {d['image_size']}x{d['image_size']} ({d['policy']}), "
          f"{d['channels']} channel(s), mean {d['mean']}, std {d['std']}, hflip {d['hflip']}, {d['workers']} worker(s)")
    print("| epoch | seconds | val accuracy |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['epoch']} | {r['time']:.1f} | {100 * r['test_acc']:.2f} % |")
    print(f"\npeak memory (trainer + workers, proportional set size): {peak[0] / 2**30:.2f} GiB; batch {d['batch_size']}; "
          f"wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
