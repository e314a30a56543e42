"""A short tour of DGConv2d: build layers, look at their learned-group machinery, take one SGD step.

Run: python examples/groups_tour.py
"""

import torch

from dgconv import DGConv2d

torch.manual_seed(0)
for cin, cout in [(64, 64), (96, 96), (48, 32), (7, 7)]:
    layer = DGConv2d(cin, cout, 3, padding=1)
    print(f"{cin:>3} -> {cout:<3} factors={layer.factors} gates={layer.binary_gates()} groups={layer.groups} "
          f"zeta={int(layer.complexity())}")

layer = DGConv2d(64, 64, 3, padding=1)
layer.set_groups(8)
print("after set_groups(8):", layer)
opt = torch.optim.SGD(layer.parameters(), lr=0.1)
x = torch.randn(4, 64, 8, 8)
loss = layer(x).square().mean() + 1e-4 * layer.complexity()
loss.backward()
print("gate gradients (straight-through):", [f"{v:+.3g}" for v in layer.gate.grad.tolist()])
opt.step()
print("groups after one step:", layer.groups)
print("Why 64: this toy loss asks for a small output and few connections, and nothing asks for accuracy, so every\n"
      "gate's gradient points the same way (closing a gate removes connections and output energy). The gates start\n"
      "at +-1e-8, so one SGD step moves each across 0: every factor splits and the layer becomes depthwise (64\n"
      "groups of 1 channel). In training the task loss pulls the other way and the budget decides how far.")
