"""Measured CPU inference time of every deployed arm of a cpu-fair sweep (issue 28, "latency, not only MACs").

For each arm with finished runs the deployed network is built as a user would deploy it -- a plain arm at its groups
(a hand-set rule from the sweep's own group spec), a learned arm (``g``, ``struct``) from each run's recorded
structure through ``dgconv.deploy`` (the channel permutations it needs included), ``star`` at its learned group
numbers -- and timed in eval mode, one thread, at batch 1 and batch 64, round-robin against the uniform arm of its
network (contiguous groups, the arm's value; the dense arm against G = 16) in the same process: the ratio is the
median over rounds of (arm / uniform) timed in the same round, and an arm with several seeds (learned structures
differ) gets the median over its seeds. The whole measurement is repeated ``--passes`` times, every arm once per
pass; an arm's value is the median over passes and its ``range_b1``/``range_b64`` the lowest and highest pass, so
that a reader (and ``dgconv.lab.fair``, which calls a learned arm slower only when the two ranges do not overlap)
sees the measurement's own spread. Writes ``latency.json`` into the sweep (``dgconv.lab.fair`` reads it).

    python experiments/cpu_fair_latency.py results/cpu-fair [--reps 9] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from dgconv import create_model, deploy  # noqa: E402
from dgconv._env import cpu_name, source_commit  # noqa: E402
from dgconv.convert.freeze import restore_grouping  # noqa: E402
from dgconv.lab.arms import plain_of  # noqa: E402
from dgconv.lab.fair import arm_key, write_latency  # noqa: E402
from dgconv.lab.sweepdata import load_sweep  # noqa: E402
from dgconv.train.runs import read_groups, read_structure  # noqa: E402


def deployed_nets(sweep, arm_result):
    """The deployed network of each finished run of an arm (one for a fixed arm, one per seed for learned ones)."""
    p, arm = sweep.protocol, arm_result.arm
    if arm.kind == "plain":
        model = arm.model or p.plain
        groups = int(arm.value)
        if arm.rule:
            groups = read_groups(sweep.path / f"{arm_key(arm, p)}.groups.json")
        return [create_model(model, num_classes=10, groups=groups)]
    g_model = arm.model or p.model
    nets = []
    for row in arm_result.rows:
        source = sweep.path / str(row.name.source)
        if arm.kind == "star":
            nets.append(create_model(plain_of(g_model, p), num_classes=10, groups=read_groups(source)))
            continue
        _, structure = read_structure(source)
        net = create_model(g_model, num_classes=10)
        restore_grouping(net, structure)
        nets.append(deploy(net))
    return nets


@torch.no_grad()
def paired_ratio(net, ref, x, reps: int) -> float:
    """Median over rounds of time(net) / time(ref), each round timing both, the order alternating between rounds
    (whichever runs second in a round finds warmer caches)."""
    for _ in range(2):
        net(x), ref(x)
    ratios = []
    for i in range(reps):
        t = {}
        for name, m in ((("net", net), ("ref", ref)) if i % 2 == 0 else (("ref", ref), ("net", net))):
            t0 = time.perf_counter()
            m(x)
            t[name] = time.perf_counter() - t0
        ratios.append(t["net"] / t["ref"])
    return statistics.median(ratios)


def reference(sweep, arm_result):
    p, arm = sweep.protocol, arm_result.arm
    net = (arm.model or p.plain) if arm.kind == "plain" else plain_of(arm.model or p.model, p)
    net = net[: -len("_shuffle")] if net.endswith("_shuffle") else net
    value = int(arm.value) if arm.value > 1 else 16
    return create_model(net, num_classes=10, groups=value), f"{net}-g{value}"


def measure(sweep_dir: Path, reps: int, passes: int) -> dict:
    """Each arm's ratios over ``passes`` whole passes over every arm (so that a slow minute of the machine lands on
    one pass of every arm, not on all of one arm's): per pass the median over the arm's networks; the arm's value is
    the median over passes and ``range`` the lowest and highest pass (the measurement's spread)."""
    torch.set_num_threads(1)
    sweep = load_sweep(sweep_dir)
    todo = []
    for a in sweep.arms:
        if a.rows:
            ref, ref_name = reference(sweep, a)
            todo.append((arm_key(a.arm, sweep.protocol), deployed_nets(sweep, a), ref, ref_name))
    per_pass: dict[str, dict[str, list[float]]] = {key: {"b1": [], "b64": []} for key, *_ in todo}
    per_run: dict[str, dict[str, list[list[float]]]] = {key: {"b1": [], "b64": []} for key, *_ in todo}
    for i in range(passes):
        for key, nets, ref, ref_name in todo:
            for b, batch in (("b1", 1), ("b64", 64)):
                x = torch.randn(batch, 3, 32, 32)
                ratios = [paired_ratio(net.eval(), ref.eval(), x, reps) for net in nets]
                per_pass[key][b].append(statistics.median(ratios))
                per_run[key][b].append([round(r, 4) for r in ratios])
            print(f"pass {i + 1}/{passes} {key:28s} b1 {per_pass[key]['b1'][-1]:.3f}x b64 {per_pass[key]['b64'][-1]:.3f}x "
                  f"(vs {ref_name}, {len(nets)} net(s))", flush=True)
    arms = {}
    for key, nets, ref, ref_name in todo:
        arms[key] = {"against": ref_name, "nets": len(nets), "per_pass": per_pass[key], "per_run": per_run[key]}
        for b in ("b1", "b64"):
            arms[key][b] = round(statistics.median(per_pass[key][b]), 4)
            arms[key][f"range_{b}"] = [round(min(per_pass[key][b]), 4), round(max(per_pass[key][b]), 4)]
    return arms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--reps", type=int, default=9, help="timed rounds of each pair of networks in a pass")
    ap.add_argument("--passes", type=int, default=3, help="whole passes over every arm (the spread between them is reported)")
    args = ap.parse_args()
    if args.reps < 1 or args.passes < 1:
        ap.error("--reps and --passes must be at least 1")
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    arms = measure(args.sweep, args.reps, args.passes)
    load_at_end = [round(x, 2) for x in os.getloadavg()]  # ps's %CPU is a lifetime average: a stopped sweep looks busy
    doc = {"machine": f"{cpu_name()}, {platform.machine()}, torch {torch.__version__}, 1 thread",
           "command": "python experiments/cpu_fair_latency.py " + " ".join(sys.argv[1:]), "commit": source_commit(),
           "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - started, 1),
           "load_average_1_5_15_min": {"start": load_at_start, "end": load_at_end}, "reps": args.reps, "passes": args.passes, "arms": arms}
    print(json.dumps({k: v for k, v in doc.items() if k != "arms"}))
    print("wrote", write_latency(args.sweep, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
