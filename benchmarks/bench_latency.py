"""Latency tables: how long measuring one takes, and how well it predicts deployed networks.

For each model: measure a :class:`dgconv.budget.latency.LatencyTable` (timed), then build deployed networks from several
random learned groupings (non-adjacent groups, permutations folded), time each (median of interleaved rounds) and
compare with ``table.predict(groups)``. Prints the error of every prediction and the largest.

    python benchmarks/bench_latency.py                               # g_resnext50 at 224 and g_resnext29_32x4d at 32, batch 1
    python benchmarks/bench_latency.py --device cuda --dtype bfloat16 --batch 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, interleaved  # noqa: E402

from dgconv import DGConv2d, create_model, deploy, learned_groups  # noqa: E402
from dgconv.budget.latency import LatencyTable  # noqa: E402

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_groups(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gate.data = torch.randn(len(m.factors), generator=gen).to(m.gate.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["g_resnext50:224", "g_resnext29_32x4d:32"], help="NAME:SIZE")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--groupings", type=int, default=5, help="random learned groupings per model")
    ap.add_argument("--reps", type=int, default=15, help="rounds per table shape")
    ap.add_argument("--check-reps", type=int, default=15, help="rounds when timing the deployed networks")
    ap.add_argument("--json")
    args = ap.parse_args()
    dev, dt = torch.device(args.device), _DTYPES[args.dtype]
    results: dict = {"environment": environment(), "args": vars(args), "models": {}}
    print(f"# {environment()}; device {args.device}, {args.dtype}, batch {args.batch}")
    for spec in args.models:
        name, size = spec.split(":")
        model = create_model(name, num_classes=1000)
        started = time.perf_counter()
        table = LatencyTable.measure(model, (3, int(size), int(size)), args.batch, dev, dt, reps=args.reps, model_name=name)
        measure_s = time.perf_counter() - started
        nets, predicted, groupings = {}, {}, {}
        for seed in range(args.groupings):
            random_groups(model, 100 + seed)
            groupings[seed] = learned_groups(model)
            nets[seed] = deploy(model.eval()).to(dev, dt).eval()
            predicted[seed] = table.predict(groupings[seed])
        x = torch.randn(args.batch, 3, int(size), int(size), device=dev, dtype=dt)

        def run(net):  # type: ignore[no-untyped-def]
            def f():
                with torch.no_grad():
                    net(x)
            return f

        measured = {k: v * 1000 for k, v in interleaved({k: run(n) for k, n in nets.items()}, reps=args.check_reps,
                                                      device=args.device).items()}
        timings = sum(len(s["ms"]) for s in table.shapes.values())
        print(f"\n## {name} at {size}x{size}: table of {len(table.layers)} layers, {len(table.shapes)} shapes, {timings} "
              f"timings, rest {table.base_ms:.2f} ms, measured in {measure_s:.1f} s\n")
        print("| grouping | groups (first layers) | predicted ms | measured ms | error |\n|---:|---|---:|---:|---:|")
        errors = []
        for k in nets:
            err = predicted[k] / measured[k] - 1
            errors.append(err)
            g = list(groupings[k].values())
            print(f"| {k} | {' '.join(map(str, g[:6]))} ... | {predicted[k]:.2f} | {measured[k]:.2f} | {100 * err:+.1f} % |")
        worst = max(errors, key=abs)
        print(f"\nlargest error {100 * worst:+.1f} %, mean absolute error {100 * sum(map(abs, errors)) / len(errors):.1f} %")
        results["models"][spec] = {"measure_seconds": measure_s, "base_ms": table.base_ms, "predicted": predicted,
                                   "measured": measured, "errors": errors}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
