"""What learned channel orders cost at run time in a chain of group convolutions (FastNet), side by side in one run.

For each grouping -- a learned structure (a cpu-fair run's ``groups.json``), and the group numbers of the 4-epoch
pilot (8 4 32 32 32 32) at random non-adjacent gates -- it times:

* **train step** (forward, backward, fused SGD step; batch 256, 2 threads): the G-FastNet frozen at that grouping
  with its orders folded (``--orders fold``, the default) and as dgconv 0.2 ran them (``gather``: an
  ``index_select`` on each side of each layer), against FastNet with the same group numbers in contiguous order;
  with channels_last input (what ``dgconv train`` feeds on the CPU) and with NCHW input;
* **inference** (eval, no grad; batch 64, 1 thread): the deployed network, both ways, against the same baseline.

Each ratio is the median over rounds of (candidate / baseline) timed in the same round, candidates interleaved.

    python benchmarks/bench_orders.py --out benchmarks/results/cpu-<commit>/bench_orders.json [--reps 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from dgconv import create_model, deploy  # noqa: E402
from dgconv._env import cpu_name, source_commit  # noqa: E402
from dgconv.budget.optimizer import configure_optimizer  # noqa: E402
from dgconv.convert.freeze import freeze_groups, restore_grouping  # noqa: E402
from dgconv.convert.orders import ChannelPermutation  # noqa: E402
from dgconv.layer.conv import dgconv_layers  # noqa: E402

PILOT = {"block1.conv1": 8, "block1.conv2": 4, "block2.conv1": 32, "block2.conv2": 32, "block3.conv1": 32,
         "block3.conv2": 32}


def random_gates(groups: dict[str, int], seed: int) -> dict[str, dict]:
    """A structure with these group numbers at random, non-adjacent gate positions (factors as the layer has them)."""
    net = create_model("g_fastnet", num_classes=10)
    gen = torch.Generator().manual_seed(seed)
    record = {}
    for name, m in dgconv_layers(net):
        n_closed = int(round(torch.log2(torch.tensor(float(groups[name]))).item()))
        order = torch.randperm(len(m.factors), generator=gen).tolist()
        closed = set(order[:n_closed])
        record[name] = {"factors": list(m.factors), "gates": [i not in closed for i in range(len(m.factors))]}
    return record


def frozen(record: dict, orders: str):
    net = create_model("g_fastnet", num_classes=10)
    restore_grouping(net, record)
    opt = configure_optimizer(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    freeze_groups(net, opt, orders)
    return net, opt


def plain(groups: dict[str, int]):
    net = create_model("fastnet", num_classes=10, groups=groups)
    return net, configure_optimizer(net, lr=0.01, momentum=0.9, weight_decay=5e-4)


def paired(cands: dict, reps: int) -> dict[str, float]:
    """Median over rounds of (candidate / baseline); the round's order rotates."""
    names = list(cands)
    for _ in range(2):
        for fn in cands.values():
            fn()
    per = {k: [] for k in names if k != "baseline"}
    for i in range(reps):
        t = {}
        for k in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            cands[k]()
            t[k] = time.perf_counter() - t0
        for k in per:
            per[k].append(t[k] / t["baseline"])
    return {k: round(statistics.median(v), 4) for k, v in per.items()}


def train_ratios(record: dict, groups: dict[str, int], fmt: torch.memory_format, reps: int) -> dict[str, float]:
    torch.set_num_threads(2)
    x = torch.randn(256, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (256,))

    def stepper(net, opt):
        net.train()

        def step():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return paired({"baseline": stepper(*plain(groups)), "fold": stepper(*frozen(record, "fold")),
                   "gather": stepper(*frozen(record, "gather"))}, reps)


@torch.no_grad()
def inference_ratios(record: dict, groups: dict[str, int], fmt: torch.memory_format, reps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=fmt)
    g = create_model("g_fastnet", num_classes=10)
    restore_grouping(g, record)
    nets = {"baseline": plain(groups)[0].eval(), "fold": deploy(g).eval(), "gather": deploy(g, orders="gather").eval()}
    return paired({k: (lambda m=m: m(x)) for k, m in nets.items()}, reps)


def gathers(record: dict, orders: str) -> int:
    net, _ = frozen(record, orders)
    return sum(isinstance(m, ChannelPermutation) and not m.identity for m in net.modules())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--run", type=Path, default=ROOT / "results" / "cpu-fair" / "g-macs-b16",
                    help="a G-FastNet run whose learned structure is timed")
    args = ap.parse_args()
    learned = json.loads((args.run / "groups.json").read_text())
    cases = {"learned": (learned["structure"], learned["groups"]), "pilot-random": (random_gates(PILOT, 0), PILOT)}
    out = {"machine": f"{cpu_name()}, {platform.machine()}, torch {torch.__version__}", "commit": source_commit(),
           "command": "python benchmarks/bench_orders.py " + " ".join(sys.argv[1:]), "reps": args.reps, "cases": {}}
    for case, (record, groups) in cases.items():
        row = {"groups": groups, "gathers": {o: gathers(record, o) for o in ("fold", "gather")}}
        for label, fmt in (("channels_last", torch.channels_last), ("nchw", torch.contiguous_format)):
            row[f"train_{label}"] = train_ratios(record, groups, fmt, args.reps)
            row[f"infer_{label}"] = inference_ratios(record, groups, fmt, args.reps)
        out["cases"][case] = row
        print(case, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
