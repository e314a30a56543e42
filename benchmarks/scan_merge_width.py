"""Which ``dgconv.layer.fast.MERGE_WIDTH`` is fastest: DGConv2d forward+backward of the exact path at each merge width.

For each layer shape (channels, map size, batch, stride) it draws three random gate settings (non-adjacent
groupings) and times the layer at every width in round-robin (5 rounds after one warm-up, medians), then prints each
grouping's row, the best width, and the sum over the shape's groupings. The widths are forced for both activation
sizes, so the rows compare the widths themselves, not the rule that picks between the two.

    python benchmarks/scan_merge_width.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment  # noqa: E402

from dgconv import DGConv2d  # noqa: E402
from dgconv.layer import fast  # noqa: E402

#: (channels, map size, batch, stride): the tiny CIFAR model's three layers at batch 128, issue 11's target case, and
#: G-ResNeXt-50's first two stages at batch 8 and 112x112.
SHAPES = [(64, 16, 128, 1), (128, 16, 128, 2), (256, 8, 128, 2), (256, 16, 64, 1), (128, 28, 8, 1), (256, 28, 8, 2)]
WIDTHS = [8, 16, 32, 64, 128]


def main() -> None:
    torch.manual_seed(0)
    print(f"# {environment()}; ms per forward+backward, medians of 5 rounds")
    for c, s, n, st in SHAPES:
        x = torch.randn(n, c, s, s, requires_grad=True)
        gen = torch.Generator().manual_seed(c + s)
        total = dict.fromkeys(WIDTHS, 0.0)
        for _ in range(3):
            layer = DGConv2d(c, c, 3, stride=st, padding=1, bias=False)
            layer.gate.data = torch.randn(len(layer.factors), generator=gen)

            def step(width: int, layer: DGConv2d = layer, x: torch.Tensor = x) -> None:
                old = fast.MERGE_WIDTH
                fast.MERGE_WIDTH = {"cpu": (width, width), "cuda": (width, width)}
                try:
                    layer.zero_grad(set_to_none=True)
                    x.grad = None
                    layer(x).square().mean().backward()
                finally:
                    fast.MERGE_WIDTH = old

            times: dict[int, list[float]] = {w: [] for w in WIDTHS}
            for w in WIDTHS:
                step(w)
            for _ in range(5):
                for w in WIDTHS:
                    t = time.perf_counter()
                    step(w)
                    times[w].append(time.perf_counter() - t)
            ms = {w: statistics.median(v) * 1e3 for w, v in times.items()}
            for w in WIDTHS:
                total[w] += ms[w]
            row = " ".join(f"{w}:{v:.0f}" for w, v in ms.items())
            print(f"C={c} S={s} N={n} s={st} G={layer.groups} ig={c // layer.groups} {row} best={min(ms, key=ms.get)}",
                  flush=True)
        print(f"C={c} S={s} N={n} s={st} sum: " + " ".join(f"{w}:{v:.0f}" for w, v in total.items()), flush=True)


if __name__ == "__main__":
    main()
