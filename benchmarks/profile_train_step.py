"""Where the time of a G-ResNeXt-50 train step goes, next to ResNeXt-50 32x4d (torch.profiler).

Ops are grouped into categories; the table shows milliseconds per step for both networks and the difference,
and a second table names the ops in "other" whose time grew most. On CPU the time is the profiler's self CPU time;
with ``--device cuda`` it is the GPU time of the kernels each op launched (bf16 autocast with ``--amp``), and the
profiler's own table of the G-ResNeXt step's kernels follows.

The optimizer is ``dgconv.configure_optimizer``'s (fused SGD where torch has it), as in ``bench_network.py``;
``--optimizer torch`` profiles plain ``torch.optim.SGD`` (what this script used before). ``--groups random`` profiles
the non-adjacent random learned groups of ``bench_network.py`` against ResNeXt-50* with the same groups.

    python benchmarks/profile_train_step.py [--batch 8 --size 112 --steps 3 --top-other 10 --groups random]
    python benchmarks/profile_train_step.py --device cuda --amp --channels-last --batch 64 --size 224
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment  # noqa: E402

from bench_network import optimizer_for, random_groups  # noqa: E402

from dgconv import DGConv2d, cached_gates, create_model, learned_groups  # noqa: E402

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


def profile_step(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp: bool = False, table: int = 0,
    cache: bool = False, optimizer: str = "dgconv",
) -> dict[str, float]:
    """Milliseconds per step by category (and ``op:NAME`` for ops in "other"); on CUDA, GPU kernel time of each op."""
    # The gates are held (their gradients are still computed), so the grouping profiled stays the one compared with.
    opt = optimizer_for(model, optimizer, gate_lr=0.0)
    cuda = x.is_cuda

    def step():
        with cached_gates(model) if cache else contextlib.nullcontext(), torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=amp
        ):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    if table:
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=table))
    out: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        if cuda and evt.device_type != torch.autograd.DeviceType.CPU:
            continue  # kernels: their time is counted on the op that launched them
        us = evt.self_device_time_total if cuda else evt.self_cpu_time_total
        ms = us / 1e3 / steps
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--table", type=int, default=0, help="also print the profiler's table of this many ops")
    ap.add_argument("--cached-gates", action="store_true", help="read all gates once per step (as dgconv train does)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    ap.add_argument("--groups", choices=["32", "random"], default="32",
                    help="every DGConv at 32 contiguous groups against ResNeXt-50 32x4d, or bench_network's random "
                         "learned groups against ResNeXt-50* with those groups")
    ap.add_argument("--optimizer", choices=["dgconv", "torch"], default="dgconv",
                    help="dgconv.configure_optimizer (fused SGD where available) or torch.optim.SGD")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    dev = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    g = create_model("g_resnext50")
    if args.groups == "random":
        random_groups(g, 1)
        base, names = create_model("resnext50_32x4d", groups=learned_groups(g)), ("ResNeXt-50*", "G-ResNeXt-50 random")
    else:
        for m in g.modules():
            if isinstance(m, DGConv2d):
                m.set_groups(32)
        base, names = create_model("resnext50_32x4d"), ("ResNeXt-50 32x4d", "G-ResNeXt-50 @32")
    base, g = base.to(dev, memory_format=fmt), g.to(dev, memory_format=fmt)
    a = profile_step(base, x, y, args.steps, args.amp, optimizer=args.optimizer)
    b = profile_step(g, x, y, args.steps, args.amp, table=args.table, cache=args.cached_gates, optimizer=args.optimizer)
    what = "GPU kernel time by launching op" if dev.type == "cuda" else "profiler self CPU time"
    print(f"# train step, batch {args.batch} at {args.size}x{args.size}, {environment()}; ms per step ({what}); "
          f"cached gates {args.cached_gates}, cudnn.benchmark {args.cudnn_benchmark}, optimizer {args.optimizer}")
    print(f"| category | {names[0]} | {names[1]} | difference |\n|---|---:|---:|---:|")
    for cat in [c for c, _ in CATEGORIES] + ["other", "total"]:
        print(f"| {cat} | {a.get(cat, 0):.0f} | {b.get(cat, 0):.0f} | {b.get(cat, 0) - a.get(cat, 0):+.0f} |")
    ops = sorted({k for k in (*a, *b) if k.startswith("op:")}, key=lambda k: a.get(k, 0) - b.get(k, 0))
    print(f"\n| 'other' op | {names[0]} | {names[1]} | difference |\n|---|---:|---:|---:|")
    for k in ops[: args.top_other]:
        print(f"| `{k[3:]}` | {a.get(k, 0):.1f} | {b.get(k, 0):.1f} | {b.get(k, 0) - a.get(k, 0):+.1f} |")


if __name__ == "__main__":
    main()
