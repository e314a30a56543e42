"""Backward plans (dgconv.layer.plans) on a whole train step: each plan forced, and the measured choice, against ResNeXt.

For G-ResNeXt-50 (or --model) at 32 contiguous groups, 32 non-adjacent groups and random learned groups, one SGD step
(forward, backward, momentum) under each forced plan ("partner", "dense", "masked") and under the measured choice
("measured": every layer's fastest, chosen at its first step), against ``resnext50_32x4d`` (or --plain) timed in the
same rounds; ratios are medians of per-round ratios. Then:

* ``--gate-every 4``: three plain steps (gate gradients off) and one with them, per 4 steps, against 4 ResNeXt steps;
* the first step after a grouping change (measured plans, cudnn autotuning on), against a steady step;
* peak memory of a step per plan (CUDA: ``max_memory_allocated``; CPU: the step's resident-set high-water mark in a
  fresh process).

    python benchmarks/bench_plans.py --device cpu --batch 8 --size 112 --reps 5            # 2-core CPU
    python benchmarks/bench_plans.py --device cuda --amp --channels-last --batch 64 --reps 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, interleaved_rounds, round_ratio, sync  # noqa: E402
from bench_network import all_groups, all_groups_strided, random_groups, train_step  # noqa: E402

import dgconv.layer.plans as plans  # noqa: E402
from dgconv import create_model, learned_groups  # noqa: E402
from dgconv.layer.conv import gate_gradients  # noqa: E402


def step_fn(model, x, y, args, plan: str | None, gates: bool = True):  # type: ignore[no-untyped-def]
    """bench_network's SGD step under backward plan ``plan`` (None or "measured": the measured choice), with gate
    gradients on or off."""
    step = train_step(model, x, y, args)

    def f() -> None:
        plans.force(None if plan in (None, "measured") else plan)
        with gate_gradients(model, gates):
            step()
    return f


def prep(model, args):  # type: ignore[no-untyped-def]
    model = model.to(args.device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def groupings(args):  # type: ignore[no-untyped-def]
    out = {}
    for name, setter in (("32 contiguous", lambda m: all_groups(m, 32)),
                         ("32 non-adjacent", lambda m: all_groups_strided(m, 32, seed=1)),
                         ("random learned", lambda m: random_groups(m, 1))):
        m = create_model(args.model)
        setter(m)
        out[name] = m
    return out


_PEAK = r"""
import sys, torch
sys.path.insert(0, {bench!r})
import bench_plans as b
args = b.parse({argv!r})
b.plans.set_selection("measure")
m = b.prep(b.groupings(args)[{grouping!r}], args)
x, y = b.batch(args)
f = b.step_fn(m, x, y, args, {plan!r})
f(); f()
if args.device == "cuda":
    torch.cuda.synchronize(); print(torch.cuda.max_memory_allocated() / 2**20)
else:
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def batch(args):  # type: ignore[no-untyped-def]
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 1000, (args.batch,), device=args.device)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="g_resnext50")
    ap.add_argument("--plain", default="resnext50_32x4d")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--only", action="append", choices=["steps", "gate-every", "change", "memory"])
    ap.add_argument("--json")
    ap.set_defaults(optimizer="dgconv", gate_lr=0.0)  # bench_network.train_step's: gates held, fused SGD
    return ap.parse_args(argv)


def main() -> None:
    args = parse()
    torch.backends.cudnn.benchmark = True
    plans.set_selection("measure")  # "measured" below: every layer's fastest plan (on the CPU too)
    torch.manual_seed(0)
    todo = args.only or ["steps", "gate-every", "change", "memory"]
    res: dict = {"environment": environment(), "args": vars(args)}
    print(f"# {res['environment']}; device {args.device}, amp {args.amp}, channels_last {args.channels_last}, "
          f"batch {args.batch} at {args.size}, {args.reps} interleaved rounds; cudnn.benchmark on")
    x, y = batch(args)
    models = {k: prep(m, args) for k, m in groupings(args).items()}
    base = prep(create_model(args.plain), args)
    if "steps" in todo:
        for gname, m in models.items():
            plain = base if gname != "random learned" else prep(create_model(args.plain, groups=learned_groups(m)), args)
            cands = {"plain": step_fn(plain, x, y, args, None)}
            for p in (*plans.PLANS, "measured"):
                cands[p] = step_fn(m, x, y, args, p)
            plans.clear()
            rounds = interleaved_rounds(cands, reps=args.reps, device=args.device)
            ratios = {p: round_ratio(rounds, p, "plain") for p in cands if p != "plain"}
            ms = {p: 1e3 * statistics.median(v) for p, v in rounds.items()}
            res.setdefault("steps", {})[gname] = {"ms": ms, "ratio": ratios, "chosen": plans.chosen(m)}
            chosen = plans.chosen(m)
            counts = {p: sum(v == p for v in chosen.values()) for p in plans.PLANS}
            print(f"\n## {args.model} at {gname} groups vs {args.plain if gname != 'random learned' else 'ResNeXt*'}"
                  f" ({ms['plain']:.1f} ms)\n\n| plan | ms / step | ratio |\n|---|---:|---:|")
            for p in ratios:
                print(f"| {p} | {ms[p]:.1f} | {ratios[p]:.2f} |")
            print(f"measured choice per layer: {counts}", flush=True)
    if "gate-every" in todo:
        m = models["32 non-adjacent"]
        on, off = step_fn(m, x, y, args, "measured"), step_fn(m, x, y, args, "measured", gates=False)
        b = step_fn(base, x, y, args, None)

        def four_g() -> None:
            on(); off(); off(); off()

        def four_b() -> None:
            b(); b(); b(); b()

        rounds = interleaved_rounds({"plain x4": four_b, "gate-every 4": four_g}, reps=args.reps, device=args.device)
        r = round_ratio(rounds, "gate-every 4", "plain x4")
        res["gate_every_4"] = r
        print(f"\n--gate-every 4 at 32 non-adjacent groups (measured plans): {r:.2f}x ResNeXt", flush=True)
    if "change" in todo:
        m = models["random learned"]
        f = step_fn(m, x, y, args, "measured")
        f(); f()
        sync(args.device)
        firsts = []
        for seed in range(2, 6):  # each a new grouping: measurement and autotuning of its new shapes
            random_groups(m, seed)
            sync(args.device)
            t = time.perf_counter()
            f()
            sync(args.device)
            firsts.append(time.perf_counter() - t)
        steady = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            sync(args.device)
            steady.append(time.perf_counter() - t)
        res["change"] = {"first_steps_s": firsts, "steady_s": statistics.median(steady)}
        print(f"\nfirst step after a grouping change: {', '.join(f'{v:.3f}' for v in firsts)} s; steady step "
              f"{statistics.median(steady):.3f} s (cost of a change: {statistics.median(firsts) - statistics.median(steady):.3f} s)",
              flush=True)
    if "memory" in todo and not args.no_memory:
        argv = sys.argv[1:]
        res["peak_mib"] = {}
        for p in (*plans.PLANS, "measured"):
            code = _PEAK.format(bench=str(Path(__file__).resolve().parent), argv=argv, grouping="32 non-adjacent", plan=p)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            res["peak_mib"][p] = float(r.stdout.strip().splitlines()[-1])
        base_mem = res["peak_mib"]["partner"]
        print("\npeak memory of a step at 32 non-adjacent groups: " + ", ".join(
            f"{p} {v:.0f} MiB ({100 * (v / base_mem - 1):+.1f} %)" for p, v in res["peak_mib"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
