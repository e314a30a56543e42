"""What exact gate gradients cost in arithmetic: multiply-adds of a G-ResNeXt-50 train step, counted, not timed.

A train step of a convolutional network costs about three forward passes of multiply-adds (the forward, the input
gradient, the weight gradient). The exact path of ``dgconv.layer.fast`` adds, per DGConv layer, what its plan computes
beyond the in-group weight gradient: the super-group weight gradient costs ``M`` in-group weight gradients instead
of one, and each separate zero-gate pass one more. Whatever kernel computes them, the cross-group products of every
zero gate are that many multiply-adds (a fused kernel could skip storing them, not computing them). This script
counts them for the groupings ``bench_network.py`` times, with the plans the layers use at that input size.

    python benchmarks/count_gate_macs.py [--batch 8 --size 112]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import all_groups, all_groups_strided, random_groups  # noqa: E402

from dgconv import DGConv2d, create_model  # noqa: E402
from dgconv.layer import fast  # noqa: E402

GROUPINGS = {
    "32 contiguous groups": lambda m: all_groups(m, 32),
    "32 non-adjacent groups": lambda m: all_groups_strided(m, 32, seed=1),
    "random learned groups": lambda m: random_groups(m, 1),
}


def count(model: torch.nn.Module, x: torch.Tensor, fraction: float = 1.0) -> dict[str, float]:
    """Forward multiply-adds of every convolution and linear layer (``all``), of the DGConv layers' group
    convolutions (``dgconv``) and the extra weight-gradient multiply-adds of the exact gate gradients (``extra``;
    separate passes scaled by ``fraction``, the gate batch fraction), and (``fewest``) what they would be with no
    merging at all: one in-group weight gradient per zero gate and digit shift, the least any exact method computes."""
    macs = {"all": 0.0, "dgconv": 0.0, "extra": 0.0, "fewest": 0.0}

    def hook(m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(m, DGConv2d):
            f = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            plan = fast.plan_for(m.grouping(), inputs[0], m.weight.shape, m.stride, m.padding, m.dilation, fraction)
            macs["dgconv"] += f
            macs["extra"] += f * ((plan.merge - 1) + fraction * len(plan.partners))
            unmerged = fast._build_plan(m.grouping(), inputs[0].device, 0)  # every zero gate a separate pass
            macs["fewest"] += f * fraction * len(unmerged.partners)
        elif isinstance(m, torch.nn.Conv2d):
            f = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            f = out.numel() * m.in_features
        else:
            return
        macs["all"] += f

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (DGConv2d, torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return macs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    args = ap.parse_args()
    x = torch.randn(args.batch, 3, args.size, args.size)
    print(f"# G-ResNeXt-50, batch {args.batch} at {args.size}x{args.size}; a step is counted as 3 forward passes")
    print("| grouping | step GMAC | group convs' share of the forward | exact gate gradients: extra GMAC | of the step "
          "| fewest possible (no merging), of the step | with --gate-batch-fraction 0.125 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, setup in GROUPINGS.items():
        model = create_model("g_resnext50")
        setup(model)
        exact, sub = count(model, x), count(model, x, 0.125)
        step = 3 * exact["all"]
        print(f"| {name} | {step / 1e9:.2f} | {exact['dgconv'] / exact['all']:.1%} | {exact['extra'] / 1e9:.2f} | "
              f"{exact['extra'] / step:.1%} | {exact['fewest'] / step:.1%} | {sub['extra'] / step:.1%} |")


if __name__ == "__main__":
    main()
