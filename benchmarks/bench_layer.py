"""Layer benchmark: DGConv2d forward+backward against nn.Conv2d(groups=G) and the masked-dense reference.

For every (C, G) it times, round-robin in one run (see _timing.py):

* ``conv``      -- ``nn.Conv2d(C, C, 3, groups=G)``: the cost of the grouping itself;
* ``dg``        -- ``DGConv2d`` at G contiguous groups (``set_groups``), gates trainable;
* ``dg-strided``-- ``DGConv2d`` at G groups from random gates: non-adjacent groups, permutations included;
* ``dense``     -- ``DGConv2d(impl="reference")``: the masked dense convolution public implementations run.

Ratios are medians over rounds of the ratio measured in each round. On CUDA it also reports peak memory of one
forward+backward. ``--repeat N`` runs the 64x256x16x16, G = 32 target case N times (separately warmed up) and
prints the median of the N runs' ratios.

    python benchmarks/bench_layer.py                      # CPU, the default sizes
    python benchmarks/bench_layer.py --device cuda --amp --channels-last --batch 64
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, interleaved_rounds, round_ratio, sync  # noqa: E402

from dgconv import DGConv2d  # noqa: E402

# (channels, spatial) typical of ResNeXt stages at 224 input: 128@56, 256@28, 512@14 (and 1024@7).
STAGES = [(128, 56), (256, 28), (512, 14)]


def strided_gates(layer: DGConv2d, groups: int, seed: int) -> None:
    """Random gates with exactly ``groups`` groups, zero gates at random positions (non-adjacent groups)."""
    gen = torch.Generator().manual_seed(seed)
    k = len(layer.factors)
    zeros = round(math.log2(groups))
    order = torch.randperm(k, generator=gen).tolist()
    bits = [1] * k
    for i in order[:zeros]:
        bits[i] = 0
    layer.gate.data = torch.tensor([0.5 if b else -0.5 for b in bits], device=layer.gate.device)
    assert layer.groups == groups


def case(c: int, s: int, n: int, groups: int, args: argparse.Namespace) -> dict:
    dev = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(n, c, s, s, device=dev).contiguous(memory_format=fmt).requires_grad_()
    mods = {
        "conv": torch.nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False),
        "dg": DGConv2d(c, c, 3, padding=1, groups=groups, bias=False),
        "dg-strided": DGConv2d(c, c, 3, padding=1, bias=False),
        "dense": DGConv2d(c, c, 3, padding=1, groups=groups, bias=False, impl="reference"),
    }
    for m in mods.values():
        m.to(dev, memory_format=fmt)
    strided_gates(mods["dg-strided"], groups, seed=c + groups)
    if groups in (1, c):  # every grouping into 1 or C groups is contiguous
        mods.pop("dg-strided")

    def step(m):
        def f():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
                y = m(x)
            y.float().sum().backward()
            x.grad = None
            m.zero_grad(set_to_none=True)
        return f

    rounds = interleaved_rounds({k: step(m) for k, m in mods.items()}, reps=args.reps, warmup=2, device=args.device)
    times = {k: statistics.median(v) for k, v in rounds.items()}
    row = {"C": c, "HxW": s, "N": n, "G": groups, **{f"{k}_ms": v * 1e3 for k, v in times.items()}}
    row["dg/conv"] = round_ratio(rounds, "dg", "conv")
    row["dg/dense"] = round_ratio(rounds, "dg", "dense")
    if "dg-strided" in times:
        row["strided/conv"] = round_ratio(rounds, "dg-strided", "conv")
    if dev.type == "cuda":
        for k, m in mods.items():
            sync(dev)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(m)()
            sync(dev)
            row[f"{k}_peak_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="batch for the stage sizes (default 8 on CPU, 64 on CUDA)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the target case (the median of their ratios is reported)")
    ap.add_argument("--target-only", action="store_true", help="only the 64x256x16x16, G = 32 case")
    args = ap.parse_args()
    n = args.batch or (64 if args.device == "cuda" else 8)
    cases = [(256, 16, 64, 32)] * args.repeat  # the target: 64x256x16x16, G = 32
    for c, s in [] if args.target_only else STAGES:
        for g in (1, 4, 32, c):
            cases.append((c, s, n, g))
    rows = []
    print(f"# DGConv2d forward+backward, 3x3, {environment()}")
    print(f"# device {args.device}, amp {args.amp}, channels_last {args.channels_last}, {args.reps} interleaved rounds, medians")
    print("| C | HxW | N | G | conv ms | DGConv ms | DGConv/conv | DGConv/dense | strided/conv | dense ms |"
          + (" peak MiB conv / DGConv / dense |" if args.device == "cuda" else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if args.device == "cuda" else ""))
    for c, s, nn_, g in cases:
        r = case(c, s, nn_, g, args)
        rows.append(r)
        strided = f"{r['strided/conv']:.2f}" if "strided/conv" in r else "-"
        mem = (f" {r['conv_peak_MiB']:.0f} / {r['dg_peak_MiB']:.0f} / {r['dense_peak_MiB']:.0f} |"
               if args.device == "cuda" else "")
        print(f"| {c} | {s} | {nn_} | {g} | {r['conv_ms']:.2f} | {r['dg_ms']:.2f} | {r['dg/conv']:.2f} | "
              f"{r['dg/dense']:.2f} | {strided} | {r['dense_ms']:.2f} |{mem}", flush=True)
    target = rows[: args.repeat]
    if args.repeat > 1:
        for key in ("dg/conv", "strided/conv"):
            runs = [r[key] for r in target]
            print(f"target case, {key} over {args.repeat} runs: median {statistics.median(runs):.2f} "
                  f"(runs: {', '.join(f'{v:.2f}' for v in runs)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
