import contextlib, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from bench_network import all_groups, random_groups
from dgconv import create_model, cached_gates, configure_optimizer, fast
from dgconv.layers import set_gate_batch_fraction
torch.backends.cudnn.benchmark = True
orig = fast.conv_backward
def nobench(*a, **k):
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=True):
        return orig(*a, **k)
x = torch.randn(64, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (64,), device="cuda")
def run(label, frac, cache, patch, groups=32):
    fast.conv_backward = nobench if patch else orig
    m = create_model("g_resnext50")
    all_groups(m, 32) if groups == 32 else random_groups(m, 1)
    set_gate_batch_fraction(m, frac)
    m = m.cuda().to(memory_format=torch.channels_last)
    opt = configure_optimizer(m, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    ts = []
    for i in range(10):
        torch.cuda.synchronize(); t = time.perf_counter()
        with (cached_gates(m) if cache else contextlib.nullcontext()), torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(x)
        loss = F.cross_entropy(out.float(), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        torch.cuda.synchronize(); ts.append((time.perf_counter() - t) * 1e3)
    print(label, " ".join(f"{v:.0f}" for v in ts), flush=True)
run("g32 frac0.125", 0.125, True, False)
run("g32 frac0.125 wgrad-nobench", 0.125, True, True)
run("g32 cached", 1.0, True, False)
run("g32 cached wgrad-nobench", 1.0, True, True)
run("rnd cached", 1.0, True, False, 0)
run("rnd cached wgrad-nobench", 1.0, True, True, 0)
