"""Network benchmark: G-ResNeXt against ResNeXt with the same groups, in one interleaved run.

* ``train50``  -- one SGD step (forward, backward, momentum + weight decay) of G-ResNeXt-50 vs ResNeXt-50:
  (a) every DGConv at 32 contiguous groups vs ``resnext50_32x4d``; (b) every DGConv at 32 non-adjacent groups
  (zero gates at random digits) vs ``resnext50_32x4d``; (c) random non-adjacent learned groups vs ResNeXt* with the
  same per-layer groups.
* ``infer50``  -- inference of the deployed G-ResNeXt-50 (random learned groups, permutations folded) vs
  ResNeXt* with the same groups built directly by ``create_model``.
* ``cifar29``  -- training throughput (images/s) of G-ResNeXt-29 32x4d vs ResNeXt-29 32x4d at 32x32, at 32
  groups and at random learned groups.
* ``small``    -- training throughput (images/s, batch ``--small-batch``) of the CPU-sized members
  (``*_cifar_tiny``, ``*_cifar_small``, ``*_digits``): the plain network vs its G-ResNeXt with every DGConv set
  to the plain network's groups (what docs/models.md quotes).

Every G-network keeps the groups it is compared with (``--gate-lr 0``, the default; gate gradients are still
computed in full).

    python benchmarks/bench_network.py                     # CPU: batch 8 at 112x112, inference batch 1 at 224
    python benchmarks/bench_network.py --device cuda --amp --channels-last --batch 64 --size 224 --cifar-batch 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, interleaved, interleaved_rounds, round_ratio  # noqa: E402
from bench_layer import strided_gates  # noqa: E402

from dgconv import DGConv2d, cached_gates, configure_optimizer, create_model, deploy, learned_groups  # noqa: E402
from dgconv.convert.freeze import freeze_groups  # noqa: E402
from dgconv.layer.conv import set_gate_batch_fraction  # noqa: E402


def random_groups(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gate.data = torch.randn(len(m.factors), generator=gen).to(m.gate.device)


def all_groups(model: torch.nn.Module, g: int) -> None:
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.set_groups(g)


def all_groups_strided(model: torch.nn.Module, g: int, seed: int) -> None:
    """Every DGConv at ``g`` non-adjacent groups (zero gates at random digits, a different draw per layer)."""
    for i, m in enumerate(m for m in model.modules() if isinstance(m, DGConv2d)):
        strided_gates(m, g, seed=seed + i)


def prep(model, args):  # type: ignore[no-untyped-def]
    model = model.to(args.device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def optimizer_for(model: torch.nn.Module, kind: str = "dgconv", gate_lr: float | None = None) -> torch.optim.Optimizer:
    """The benchmarks' optimizer: SGD at lr 1e-3 with momentum and weight decay, either ``dgconv.configure_optimizer``
    (fused where available, no decay on gates; what `dgconv train` uses) or plain ``torch.optim.SGD`` (``kind
    "torch"``). ``gate_lr``: the gates' learning rate (None: the weights'); 0 still computes every gate gradient but
    keeps the grouping fixed between timed steps. The gates get a parameter group of their own in both kinds."""
    gates = {id(m.gate) for m in model.modules() if isinstance(m, DGConv2d)}
    if kind == "torch":
        params = list(model.parameters())
        opt: torch.optim.Optimizer = torch.optim.SGD(
            [{"params": [p for p in params if id(p) not in gates]}, {"params": [p for p in params if id(p) in gates]}],
            lr=1e-3, momentum=0.9, weight_decay=1e-4)
    else:
        opt = configure_optimizer(model, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    if gate_lr is not None:
        for group in opt.param_groups:
            if any(id(p) in gates for p in group["params"]):
                group["lr"] = gate_lr
    return opt


def train_step(model, x, y, args, cache: bool = False):  # type: ignore[no-untyped-def]
    """One step of :func:`optimizer_for` (``--optimizer``, ``--gate-lr``); ``cache``: read all gates once per step
    (dgconv.cached_gates, as the trainer does)."""
    opt = optimizer_for(model, args.optimizer, args.gate_lr)

    def f():
        with cached_gates(model) if cache else _Null(), torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=args.amp
        ):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return f


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


_PEAK = r"""
import sys, torch, torch.nn.functional as F
sys.path.insert(0, {bench!r})
from dgconv import create_model, learned_groups, configure_optimizer, DGConv2d
from dgconv.convert.freeze import freeze_groups
from bench_network import random_groups
which, batch, size, device = {which!r}, {batch}, {size}, {device!r}
if which in ("g_resnext50", "frozen"):
    model = create_model("g_resnext50"); random_groups(model, 1)
    if which == "frozen":
        freeze_groups(model)
elif which == "resnext*":
    model = create_model("resnext50_32x4d", groups={groups!r})
else:
    model = create_model("resnext50_32x4d")
model = model.to(device)
opt = configure_optimizer(model, lr=1e-3)
x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 1000, (batch,), device=device)
for _ in range(2):
    loss = F.cross_entropy(model(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
if device == "cuda":
    print(torch.cuda.max_memory_allocated() / 2**20)
else:  # VmHWM: this process's peak resident set (ru_maxrss would start at the parent's peak, inherited at fork)
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def peak_memory(which: str, args) -> float:  # type: ignore[no-untyped-def]
    """Peak memory (MiB) of two train steps in a fresh process: CPU resident set, or CUDA allocated memory."""
    import subprocess

    g = create_model("g_resnext50")  # the random learned groups, built here so the measured process holds one model
    random_groups(g, 1)
    code = _PEAK.format(bench=str(Path(__file__).resolve().parent), which=which, batch=args.batch, size=args.size,
                        device=args.device, groups=learned_groups(g))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def infer(model, x, args):  # type: ignore[no-untyped-def]
    model.eval()

    def f():
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.amp):
            model(x)
    return f


def batch(n, c, s, classes, args):  # type: ignore[no-untyped-def]
    x = torch.randn(n, c, s, s, device=args.device)
    if args.channels_last or args.nhwc_input:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, classes, (n,), device=args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--infer-batch", type=int, default=1)
    ap.add_argument("--cifar-batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true", help="convert the models and the batches to channels_last")
    ap.add_argument("--nhwc-input", action="store_true",
                    help="NHWC batches, weights as built: what `dgconv train` runs on CPU with crop-augmented batches")
    ap.add_argument("--small-batch", type=int, default=128)
    ap.add_argument("--only", choices=["train50", "memory50", "infer50", "cifar29", "small", "compile"], action="append")
    ap.add_argument("--compile-model", default="g_resnext_cifar_small", help="the model of the compile section")
    ap.add_argument("--optimizer", choices=["dgconv", "torch"], default="dgconv",
                    help="dgconv.configure_optimizer (fused SGD where available; default) or torch.optim.SGD")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time its algorithms per shape (what `dgconv train` does unless --deterministic)")
    ap.add_argument("--gate-lr", type=float, default=0.0,
                    help="learning rate of the gates. The default 0 computes every gate gradient but keeps each "
                         "G-network at the groups it is compared with: gates set by set_groups sit near the "
                         "boundary, and at the weights' 1e-3 they drift within the warm-up (measured: '@32' "
                         "models ended at 1 to 64 groups per layer, the sub-batch model at fewer groups than the "
                         "exact one, so the rows compared different networks; runs before this default did). "
                         "Give 1e-3 to time steps with the gates learning")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    results = {"environment": environment(), "args": vars(args)}
    print(f"# {environment()}; device {args.device}, amp {args.amp}, channels_last {args.channels_last}, "
          f"nhwc input {args.nhwc_input}, "
          f"cudnn.benchmark {args.cudnn_benchmark}, gate lr {args.gate_lr}, {args.reps} interleaved rounds, medians")
    todo = args.only or ["train50", "memory50", "infer50", "cifar29", "small"]
    print(f"# optimizer: {args.optimizer}")

    if "train50" in todo:
        x, y = batch(args.batch, 3, args.size, 1000, args)
        g32 = create_model("g_resnext50")
        all_groups(g32, 32)
        g32f = create_model("g_resnext50")
        all_groups(g32f, 32)
        set_gate_batch_fraction(g32f, 0.125)
        g32s = create_model("g_resnext50")
        all_groups_strided(g32s, 32, seed=1)
        g32sf = create_model("g_resnext50")
        all_groups_strided(g32sf, 32, seed=1)
        set_gate_batch_fraction(g32sf, 0.125)
        grnd = create_model("g_resnext50")
        random_groups(grnd, 1)
        grndf = create_model("g_resnext50")
        random_groups(grndf, 1)
        set_gate_batch_fraction(grndf, 0.125)
        spec = learned_groups(grnd)
        star = create_model("resnext50_32x4d", groups=spec)
        frozen = create_model("g_resnext50")
        random_groups(frozen, 1)
        freeze_groups(frozen)  # the same groups, frozen: what --freeze-groups-at trains after the switch
        c = {"resnext50_32x4d": train_step(prep(create_model("resnext50_32x4d"), args), x, y, args),
             "g_resnext50 @32": train_step(prep(g32, args), x, y, args),
             "g_resnext50 @32, cached gates": train_step(g32, x, y, args, cache=True),
             "g_resnext50 @32, gate batch fraction 0.125": train_step(prep(g32f, args), x, y, args),
             "g_resnext50 @32 non-adjacent": train_step(prep(g32s, args), x, y, args),
             "g_resnext50 @32 non-adjacent, cached gates": train_step(g32s, x, y, args, cache=True),
             "g_resnext50 @32 non-adjacent, gate batch fraction 0.125": train_step(prep(g32sf, args), x, y, args),
             "resnext* (random groups)": train_step(prep(star, args), x, y, args),
             "g_resnext50 (same random groups)": train_step(prep(grnd, args), x, y, args),
             "g_resnext50 (same random groups), cached gates": train_step(grnd, x, y, args, cache=True),
             "g_resnext50 (same random groups), gate batch fraction 0.125": train_step(prep(grndf, args), x, y, args),
             "frozen g_resnext50 (same random groups)": train_step(prep(frozen, args), x, y, args)}
        rounds = interleaved_rounds(c, reps=args.reps, device=args.device)
        t = {k: statistics.median(v) for k, v in rounds.items()}
        results["train50"], results["train50_rounds"] = t, rounds
        print(f"\n## G-ResNeXt-50 train step, batch {args.batch} at {args.size}x{args.size}\n")
        print("ms / step: the median over the rounds; ratio: the median of the per-round ratios against the row's baseline "
              "(timed in the same round)\n")
        print("| network | ms / step | ratio |\n|---|---:|---:|")
        base, star_ = "resnext50_32x4d", "resnext* (random groups)"
        rows = ((base, "ResNeXt-50 32x4d", base),
                ("g_resnext50 @32", "G-ResNeXt-50, all DGConv at 32 groups (exact)", base),
                ("g_resnext50 @32, cached gates", "the same, gates read once per step (as dgconv train does)", base),
                ("g_resnext50 @32, gate batch fraction 0.125", "the same, --gate-batch-fraction 0.125", base),
                ("g_resnext50 @32 non-adjacent", "G-ResNeXt-50, all DGConv at 32 non-adjacent groups (exact)", base),
                ("g_resnext50 @32 non-adjacent, cached gates", "the same, gates read once per step", base),
                ("g_resnext50 @32 non-adjacent, gate batch fraction 0.125", "the same, --gate-batch-fraction 0.125", base),
                (star_, "ResNeXt-50* with random learned groups", star_),
                ("g_resnext50 (same random groups)", "G-ResNeXt-50 at those groups (non-adjacent, exact)", star_),
                ("g_resnext50 (same random groups), cached gates", "the same, gates read once per step", star_),
                ("g_resnext50 (same random groups), gate batch fraction 0.125", "the same, --gate-batch-fraction 0.125",
                 star_),
                ("frozen g_resnext50 (same random groups)", "the same after freeze_groups (search, then train)", star_))
        for k, label, ref in rows:
            print(f"| {label} | {t[k] * 1e3:.0f} | {round_ratio(rounds, k, ref):.2f} |", flush=True)
        del g32, g32f, g32s, g32sf, grnd, grndf, star, frozen, c

    if "memory50" in todo:
        print(f"\n## Peak memory of a G-ResNeXt-50 train step, batch {args.batch} at {args.size}x{args.size}\n")
        print("| network | peak memory (MiB) | ratio |\n|---|---:|---:|")
        peaks = {k: peak_memory(k, args) for k in ("resnext50_32x4d", "g_resnext50", "resnext*", "frozen")}
        results["memory50"] = peaks
        for k, label, ref in (("resnext50_32x4d", "ResNeXt-50 32x4d", "resnext50_32x4d"),
                              ("g_resnext50", "G-ResNeXt-50 (random learned groups)", "resnext50_32x4d"),
                              ("resnext*", "ResNeXt-50* with those groups", "resnext*"),
                              ("frozen", "G-ResNeXt-50 after freeze_groups", "resnext*")):
            print(f"| {label} | {peaks[k]:.0f} | {peaks[k] / peaks[ref]:.2f} |", flush=True)

    if "infer50" in todo:
        x, _ = batch(args.infer_batch, 3, 224, 1000, args)
        g = create_model("g_resnext50")
        random_groups(g, 2)
        d = prep(deploy(g.eval()), args)
        star = prep(create_model("resnext50_32x4d", groups=learned_groups(g)), args)
        t = interleaved({"resnext*": infer(star, x, args), "deployed": infer(d, x, args)}, reps=args.reps * 2, device=args.device)
        results["infer50"] = t
        print(f"\n## Deployed G-ResNeXt-50 inference, batch {args.infer_batch} at 224x224 (random learned groups)\n")
        print("| network | ms | ratio |\n|---|---:|---:|")
        print(f"| ResNeXt-50* built with the same groups | {t['resnext*'] * 1e3:.1f} | 1.00 |")
        print(f"| deployed G-ResNeXt-50 (permutations folded) | {t['deployed'] * 1e3:.1f} | {t['deployed'] / t['resnext*']:.2f} |", flush=True)
        del g, d, star

    if "cifar29" in todo:
        x, y = batch(args.cifar_batch, 3, 32, 10, args)
        g32 = create_model("g_resnext29_32x4d", num_classes=10)
        all_groups(g32, 32)
        grnd = create_model("g_resnext29_32x4d", num_classes=10)
        random_groups(grnd, 3)
        star = create_model("resnext29_32x4d", num_classes=10, groups=learned_groups(grnd))
        c = {"resnext29": train_step(prep(create_model("resnext29_32x4d", num_classes=10), args), x, y, args),
             "g29 @32": train_step(prep(g32, args), x, y, args),
             "star": train_step(prep(star, args), x, y, args),
             "g29 random": train_step(prep(grnd, args), x, y, args),
             "g29 random cached": train_step(grnd, x, y, args, cache=True)}
        t = interleaved(c, reps=args.reps, device=args.device)
        results["cifar29"] = t
        n = args.cifar_batch
        print(f"\n## CIFAR ResNeXt-29 32x4d training throughput, batch {n} at 32x32\n")
        print("| network | images / s | ratio |\n|---|---:|---:|")
        print(f"| ResNeXt-29 32x4d | {n / t['resnext29']:.0f} | 1.00 |")
        print(f"| G-ResNeXt-29 at 32 groups | {n / t['g29 @32']:.0f} | {t['resnext29'] / t['g29 @32']:.2f} |")
        print(f"| ResNeXt-29* with random learned groups | {n / t['star']:.0f} | 1.00 |")
        print(f"| G-ResNeXt-29 at those groups | {n / t['g29 random']:.0f} | {t['star'] / t['g29 random']:.2f} |")
        print(f"| the same, gates read once per step (dgconv.cached_gates, as dgconv train does) | "
              f"{n / t['g29 random cached']:.0f} | {t['star'] / t['g29 random cached']:.2f} |", flush=True)

    if "small" in todo:
        n = args.small_batch
        print(f"\n## CPU-sized members: training throughput, batch {n}\n")
        print("| plain network | groups | images / s | G-ResNeXt at those groups | images / s | ratio |\n|---|---:|---:|---|---:|---:|")
        results["small"] = {}
        for plain, gname, groups, (c, s_) in [("resnext_cifar_tiny", "g_resnext_cifar_tiny", 16, (3, 32)),
                                              ("resnext_cifar_small", "g_resnext_cifar_small", 32, (3, 32)),
                                              ("resnext_digits", "g_resnext_digits", 8, (1, 8))]:
            x, y = batch(n, c, s_, 10, args)
            g = create_model(gname, num_classes=10)
            all_groups(g, groups)
            t = interleaved({"plain": train_step(prep(create_model(plain, num_classes=10), args), x, y, args),
                             "g": train_step(prep(g, args), x, y, args, cache=True)}, reps=args.reps, device=args.device)
            results["small"][plain] = t
            print(f"| `{plain}` | {groups} | {n / t['plain']:.0f} | `{gname}` | {n / t['g']:.0f} | "
                  f"{t['plain'] / t['g']:.2f} |", flush=True)

    if "compile" in todo:
        import time

        n = args.cifar_batch
        x, y = batch(n, 3, 32, 10, args)
        eager = prep(create_model(args.compile_model, num_classes=10), args)
        random_groups(eager, 4)
        comp_model = prep(create_model(args.compile_model, num_classes=10), args)
        comp_model.load_state_dict(eager.state_dict())
        compiled = torch.compile(comp_model)
        step_c = train_step(compiled, x, y, args)
        started = time.perf_counter()
        step_c()  # compiles
        compile_s = time.perf_counter() - started
        t = interleaved({"eager": train_step(eager, x, y, args, cache=True), "compiled": step_c}, reps=args.reps,
                        device=args.device)
        results["compile"] = {**t, "compile_seconds": compile_s}
        print(f"\n## torch.compile of a {args.compile_model} train step, batch {n} at 32x32 (compile took {compile_s:.0f} s)\n")
        print("| network | ms / step | ratio |\n|---|---:|---:|")
        print(f"| eager | {t['eager'] * 1e3:.0f} | 1.00 |")
        print(f"| torch.compile (DGConv layers as one op each, no graph break) | {t['compiled'] * 1e3:.0f} | "
              f"{t['compiled'] / t['eager']:.2f} |", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
