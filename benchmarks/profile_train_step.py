"""Where the time of a G-ResNeXt-50 train step goes, next to ResNeXt-50 32x4d (torch.profiler, CPU time).

Ops are grouped into categories; the table shows milliseconds per step for both networks and the difference,
and a second table names the ops in "other" whose time grew most.

    python benchmarks/profile_train_step.py [--batch 8 --size 112 --steps 3 --top-other 10]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment  # noqa: E402

from dgconv import DGConv2d, create_model  # noqa: E402

OPTIMIZER = "optimizer (SGD, momentum, decay)"
CATEGORIES = [
    ("convolution forward", ("aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::_convolution")),
    ("convolution backward", ("aten::convolution_backward",)),
    ("zero-filled dense gradients", ("aten::fill_", "aten::zero_")),
    (OPTIMIZER, ("aten::_foreach", "Optimizer.")),
    ("gathers and permutations", ("aten::index_select", "aten::index_copy_", "aten::index_add_", "aten::gather")),
    ("batch norm", ("aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::_batch_norm")),
    ("gradient accumulation", ("aten::add_",)),
]


def _in_optimizer(evt) -> bool:  # type: ignore[no-untyped-def]
    """True for ops run inside ``Optimizer.step`` / ``zero_grad`` (on CPU, SGD's decay and momentum are plain
    ``aten::add``/``mul_`` calls, which the name alone would not attribute to the optimizer)."""
    while evt is not None:
        if evt.name.startswith("Optimizer."):
            return True
        evt = evt.cpu_parent
    return False


def categorize(name: str) -> str:
    for cat, prefixes in CATEGORIES:
        if name.startswith(prefixes):
            return cat
    return "other"


def profile_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    out: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        ms = evt.self_cpu_time_total / 1e3 / steps
        cat = OPTIMIZER if _in_optimizer(evt) else categorize(evt.name)
        out[cat] += ms
        if cat == "other":
            out["op:" + evt.name] += ms
    out["total"] = sum(v for k, v in out.items() if not k.startswith("op:"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top-other", type=int, default=10, help="list this many 'other' ops by growth")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))
    base = create_model("resnext50_32x4d")
    g = create_model("g_resnext50")
    for m in g.modules():
        if isinstance(m, DGConv2d):
            m.set_groups(32)
    a, b = profile_step(base, x, y, args.steps), profile_step(g, x, y, args.steps)
    print(f"# train step, batch {args.batch} at {args.size}x{args.size}, {environment()}; ms per step (profiler self CPU time)")
    print("| category | ResNeXt-50 32x4d | G-ResNeXt-50 @32 | difference |\n|---|---:|---:|---:|")
    for cat in [c for c, _ in CATEGORIES] + ["other", "total"]:
        print(f"| {cat} | {a.get(cat, 0):.0f} | {b.get(cat, 0):.0f} | {b.get(cat, 0) - a.get(cat, 0):+.0f} |")
    ops = sorted({k for k in (*a, *b) if k.startswith("op:")}, key=lambda k: a.get(k, 0) - b.get(k, 0))
    print("\n| 'other' op | ResNeXt-50 32x4d | G-ResNeXt-50 @32 | difference |\n|---|---:|---:|---:|")
    for k in ops[: args.top_other]:
        print(f"| `{k[3:]}` | {a.get(k, 0):.1f} | {b.get(k, 0):.1f} | {b.get(k, 0) - a.get(k, 0):+.1f} |")


if __name__ == "__main__":
    main()
