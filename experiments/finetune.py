"""Fine-tuning a converted network: does it keep its structure on the first steps, and can closed gates merge?

1. ``first-step``: a ResNeXt-50 32x4d state_dict (random weights: no download here) loaded into ``g_resnext50`` with
   ``dgconv.train.pretrained.load_pretrained`` -- gates at |g~| = 1e-8 (the paper's init) or 1.0 (our default), out-of-group
   weights zero (0.1's ``from_conv``) or freshly initialised (our default) -- then one SGD step (lr 0.01, momentum
   0.9) on a random batch under b = 32: how many of the 16 layers changed their groups, zeta/o before and after, and
   how many closed gates received a non-zero gradient.
2. ``digits``: a ResNeXt trained on the digits (30 epochs) fine-tuned as G-ResNeXt under b = 16 for 5 epochs at lr 0.01,
   gate init 1e-8 vs 1.0: groups after the first epoch, accuracy, zeta/o.

    python experiments/finetune.py first-step
    python experiments/finetune.py digits --out results/finetune
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from dgconv import ResourceConstraint, create_model, learned_groups
from dgconv.cli import main as dgconv
from dgconv.layer.conv import dgconv_layers
from dgconv.train.pretrained import load_pretrained


def first_step() -> None:
    torch.manual_seed(0)
    plain = create_model("resnext50_32x4d", num_classes=1000)
    path = Path(tempfile.mkdtemp()) / "resnext50.pth"
    torch.save(plain.state_dict(), path)
    x, y = torch.randn(8, 3, 112, 112), torch.randint(0, 1000, (8,))
    print("| gate init | out-of-group weights | layers regrouped by one step | zeta/o before -> after | "
          "closed gates with a non-zero gradient |")
    print("|---:|---|---:|---|---:|")
    for magnitude in (1e-8, 1.0):
        for fill in ("zeros", "init"):
            torch.manual_seed(1)
            model = create_model("g_resnext50", num_classes=1000)
            load_pretrained(model, path, gate_init=magnitude)
            if fill == "zeros":  # 0.1's from_conv
                with torch.no_grad():
                    for _, m in dgconv_layers(model):
                        m.weight.mul_(m.relationship()[:, :, None, None])
            c = ResourceConstraint(model, budget=32)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            before, z0 = learned_groups(model), c.current() / c.o
            loss = c(F.cross_entropy(model(x), y))
            opt.zero_grad()
            loss.backward()
            closed = [(m, k) for _, m in dgconv_layers(model) for k, b in enumerate(m.binary_gates()) if not b]
            alive = sum(bool(m.gate.grad[k] != 0) for m, k in closed)
            opt.step()
            after = learned_groups(model)
            changed = sum(before[n] != after[n] for n in before)
            print(f"| {magnitude:g} | {fill} | {changed} of {len(before)} | {z0:.3f} -> {c.current() / c.o:.3f} | "
                  f"{alive} of {len(closed)} |", flush=True)


def digits(out: Path) -> None:
    plain = out / "plain"
    if not (plain / "last.pt").exists():
        assert dgconv(["train", "--model", "resnext_digits", "--budget", "none", "--epochs", "30", "--out", str(plain),
                       "--no-progress"]) == 0
    base = json.loads((plain / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]
    print(f"plain ResNeXt (8 groups), 30 epochs: {100 * base:.2f} %")
    print("| gate init | groups after epoch 1 | final groups | zeta/o | test acc | vs plain |")
    print("|---:|---|---|---:|---:|---:|")
    for gate in ("1e-8", "1.0"):
        run = out / f"ft-gate{gate}"
        if not (run / "last.pt").exists():
            assert dgconv(["train", "--model", "g_resnext_digits", "--init-from", str(plain / "last.pt"), "--gate-init",
                           gate, "--budget", "16", "--epochs", "5", "--lr", "0.01", "--out", str(run), "--no-progress"]) == 0
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        g1, gl = list(rows[0]["groups"].values()), list(rows[-1]["groups"].values())
        print(f"| {gate} | {g1} | {gl} | {rows[-1]['zeta_over_o']:.3f} | {100 * rows[-1]['test_acc']:.2f} | "
              f"{100 * (rows[-1]['test_acc'] - base):+.2f} |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["first-step", "digits"])
    ap.add_argument("--out", default="results/finetune")
    a = ap.parse_args()
    first_step() if a.what == "first-step" else digits(Path(a.out))
