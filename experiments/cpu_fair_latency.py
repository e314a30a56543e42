"""Measured CPU inference time of every deployed arm of a cpu-fair sweep (issue 28, "latency, not only MACs").

For each arm with finished runs the deployed network is built as a user would deploy it -- a plain arm at its groups
(a hand-set rule from the sweep's own group spec), a learned arm (``g``, ``struct``) from each run's recorded
structure through ``dgconv.deploy`` (the channel permutations it needs included), ``star`` at its learned group
numbers -- and timed in eval mode, one thread, at batch 1 and batch 64, round-robin against the uniform arm of its
network (contiguous groups, the arm's value; the dense arm against G = 16) in the same process: the ratio is the
median over rounds of (arm / uniform) timed in the same round, and an arm with several seeds (learned structures
differ) gets the median over its seeds. Writes ``latency.json`` into the sweep (``dgconv.lab.fair`` reads it).

    python experiments/cpu_fair_latency.py results/cpu-fair [--reps 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
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


def measure(sweep_dir: Path, reps: int) -> dict:
    torch.set_num_threads(1)
    sweep = load_sweep(sweep_dir)
    arms = {}
    for a in sweep.arms:
        if not a.rows:
            continue
        ref, ref_name = reference(sweep, a)
        ratios = {"b1": [], "b64": []}
        for net in deployed_nets(sweep, a):
            for key, batch in (("b1", 1), ("b64", 64)):
                x = torch.randn(batch, 3, 32, 32)
                ratios[key].append(paired_ratio(net.eval(), ref.eval(), x, reps))
        arms[arm_key(a.arm, sweep.protocol)] = {
            "b1": round(statistics.median(ratios["b1"]), 4), "b64": round(statistics.median(ratios["b64"]), 4),
            "per_run": {k: [round(v, 4) for v in vs] for k, vs in ratios.items()}, "against": ref_name,
        }
        print(f"{arm_key(a.arm, sweep.protocol):28s} b1 {arms[arm_key(a.arm, sweep.protocol)]['b1']:.3f}x "
              f"b64 {arms[arm_key(a.arm, sweep.protocol)]['b64']:.3f}x (vs {ref_name}, {len(ratios['b1'])} net(s))",
              flush=True)
    return arms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    started = time.time()
    arms = measure(args.sweep, args.reps)
    others = subprocess.run(["sh", "-c", "ps -eo pcpu= | awk '$1 > 50' | wc -l"], capture_output=True, text=True).stdout.strip()
    doc = {"machine": f"{cpu_name()}, {platform.machine()}, torch {torch.__version__}, 1 thread",
           "command": "python experiments/cpu_fair_latency.py " + " ".join(sys.argv[1:]), "commit": source_commit(),
           "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - started, 1),
           "busy_processes_at_the_end": others, "reps": args.reps, "arms": arms}
    print(json.dumps({k: v for k, v in doc.items() if k != "arms"}))
    print("wrote", write_latency(args.sweep, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
