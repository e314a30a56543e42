"""Budget costs (connections, MACs, latency), target=, the lagrangian objective, projection in every cost, and
hardware-legal groups, against arithmetic written here and finite differences."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from dgconv import DGConv2d, ResourceConstraint, create_model
from dgconv.layer.conv import dgconv_layers
from dgconv.errors import ConfigError
from dgconv.budget.latency import LatencyTable
from tests.reference import divisors


def random_gates(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.randn(len(m.factors), generator=gen)


# Output size of every 3x3 bottleneck convolution, by the architecture's arithmetic (not by running the model):
# CIFAR stem keeps 32x32 (stride-2 stem: 16x16), each later stage halves it in its first block; the ImageNet stem
# divides by 4, then stages 1-4 are 56, 28, 14, 7 at 224.
def expected_hw(name: str, model_name: str, size: int) -> int:
    stage = int(name[len("layer")]) - 1
    if model_name.startswith("g_resnext50"):
        return size // 4 // 2**stage
    first = size // 2 if model_name.endswith("cifar_tiny") else size
    return first // 2**stage


@pytest.mark.parametrize("model_name,size", [("g_resnext29_32x4d", 32), ("g_resnext_cifar_tiny", 32), ("g_resnext50", 224), ("g_resnext50", 160)])
def test_mac_zeta_equals_per_layer_arithmetic(model_name, size):
    model = create_model(model_name, num_classes=10)
    for seed in range(2):
        random_gates(model, seed)
        c = ResourceConstraint(model, budget=32, cost="macs", input_size=(3, size, size))
        expected = 0
        for name, m in dgconv_layers(model):
            hw = expected_hw(name, model_name, size)
            expected += m.in_channels * m.out_channels * 9 * hw * hw // m.groups
        assert c.current() == expected
        assert c.zeta().item() == pytest.approx(expected, rel=1e-6)
        # o: the same network with 32 groups in every layer
        assert c.o == pytest.approx(sum(m.in_channels * m.out_channels * 9 * expected_hw(n, model_name, size) ** 2 / 32
                                        for n, m in dgconv_layers(model)))


def flip_and_measure(c, layer, k):
    """zeta at the current gates with gate k forced open (1) and closed (0)."""
    old = layer.gate.data.clone()
    out = []
    for sign in (1.0, -1.0):
        layer.gate.data[k] = sign * (abs(old[k]) + 0.5)
        out.append(c.current())
    layer.gate.data = old
    return out


@pytest.mark.parametrize("cost", ["connections", "macs", "latency"])
def test_gate_gradients_are_the_finite_differences(cost, digits_table):
    model = create_model("g_resnext_digits", num_classes=10)
    for seed in range(3):
        random_gates(model, seed)
        c = ResourceConstraint(model, budget=None, cost=cost, input_size=(1, 8, 8), latency_table=digits_table)
        for _, m in c.layers:
            m.gate.grad = None
        c.zeta().backward()
        for _, m in c.layers:
            for k in range(len(m.factors)):
                opened, closed = flip_and_measure(c, m, k)
                assert m.gate.grad[k].item() == pytest.approx(opened - closed, rel=1e-5, abs=1e-6), (cost, k)


def test_multilinear_extension_of_a_table_equals_the_closed_form():
    """For connections the generic 2^K table contraction and the closed form agree, also at relaxed gates."""
    from dgconv.budget.costs import ConnectionCost, Cost

    class TableConnections(Cost):  # the same cost, through the generic table path
        def at(self, name, groups):
            m = self.layers[name]
            return m.in_channels * m.out_channels / groups

    layer = DGConv2d(48, 96, 3, padding=1)
    closed_form, table = ConnectionCost({"l": layer}), TableConnections({"l": layer})
    for bits in itertools.product((0, 1), repeat=len(layer.factors)):
        layer.gate.data = torch.tensor([0.3 if b else -0.3 for b in bits])
        assert table.value("l").item() == pytest.approx(closed_form.value("l").item())
    relaxed = torch.rand(len(layer.factors))
    layer.effective_gates = lambda: relaxed  # evaluate both extensions between the corners
    assert table.value("l").item() == pytest.approx(closed_form.value("l").item())


@pytest.fixture(scope="module")
def digits_table():
    return LatencyTable.measure(create_model("g_resnext_digits", num_classes=10), (1, 8, 8), reps=3)


def test_latency_table_roundtrip_predict_and_checks(digits_table, tmp_path):
    path = digits_table.save(tmp_path / "t.json")
    t = LatencyTable.load(path)
    assert t.layers == digits_table.layers and t.input_size == (1, 8, 8) and t.base_ms == digits_table.base_ms
    model = create_model("g_resnext_digits", num_classes=10)
    layers = dict(dgconv_layers(model))
    for name, m in layers.items():  # every reachable group number was timed
        assert sorted(int(g) for g in t.shapes[t.layers[name]]["ms"]) == divisors(math.gcd(m.in_channels, m.out_channels))
    groups = {n: m.groups for n, m in layers.items()}
    assert t.predict(groups) == pytest.approx(t.base_ms + sum(t.time(n, g) for n, g in groups.items()))
    with pytest.raises(ConfigError, match="input size 1x8x8"):
        ResourceConstraint(model, budget=4, cost="latency", latency_table=t, input_size=(1, 16, 16))
    with pytest.raises(ConfigError, match="lacks 6 of this model's 9 DGConv layers"):
        ResourceConstraint(create_model("g_resnext29_32x4d", num_classes=10, in_chans=1), budget=4, cost="latency",
                           latency_table=t, input_size=(1, 8, 8))
    wide = create_model("g_resnext_digits", num_classes=10, in_chans=1, stage_planes=(8, 16, 64))
    with pytest.raises(ConfigError, match="differs from this model's in in_channels"):
        ResourceConstraint(wide, budget=4, cost="latency", latency_table=t, input_size=(1, 8, 8))
    with pytest.raises(ConfigError, match="needs a latency table"):
        ResourceConstraint(model, budget=4, cost="latency")
    with pytest.raises(ConfigError, match="b=3 needs b to be a group number"):
        ResourceConstraint(model, budget=3, cost="latency", latency_table=t)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a dgconv latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="unknown cost"):
        ResourceConstraint(model, budget=4, cost="flops")


def test_target_is_an_absolute_cap_on_the_whole_network():
    from dgconv.convert.profile import profile

    model = create_model("g_resnext_cifar_tiny", num_classes=10)
    random_gates(model, 0)
    prof = profile(model, (3, 32, 32))
    dg = sum(lp.macs for lp in prof.layers if lp.kind == "DGConv2d")
    c = ResourceConstraint(model, cost="macs", target=prof.macs * 0.9)
    assert c.cost.fixed == prof.macs - dg and c.o == pytest.approx(prof.macs * 0.9 - (prof.macs - dg))
    assert c.budget is None and c.summary()["macs"] == prof.macs
    with pytest.raises(ConfigError, match="not above the network's fixed part"):
        ResourceConstraint(model, cost="macs", target=(prof.macs - dg) * 0.5)
    with pytest.raises(ConfigError, match="unreachable"):
        ResourceConstraint(model, cost="macs", target=(prof.macs - dg) + 1000)


def synthetic(table: LatencyTable) -> LatencyTable:
    """The measured table's layout with times that fall with the group number (a measured CPU table of 8x8 layers
    need not: there dense can beat grouped)."""
    import copy

    t = copy.deepcopy(table)
    for key, shape in t.shapes.items():
        shape["ms"] = {g: 0.1 + shape["in_channels"] * shape["out_channels"] / 1000 / int(g) for g in shape["ms"]}
    return t


@pytest.mark.parametrize("cost", ["macs", "latency"])
def test_projection_meets_the_budget_in_every_cost(cost, digits_table):
    model = create_model("g_resnext_digits", num_classes=10)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.rand(len(m.factors), generator=torch.Generator().manual_seed(3)) + 0.01  # all open
    c = ResourceConstraint(model, budget=8, cost=cost, latency_table=synthetic(digits_table))
    before = c.current()
    closed = c.project()
    assert closed and c.current() <= c.o < before
    assert all(m.gate[k] < 0 for name, m in c.layers for n, k in closed if n == name)
    assert c.project() == []
    # a table in which closing gates only slows the layers down: projection stops without closing any
    slow = synthetic(digits_table)
    for shape in slow.shapes.values():
        shape["ms"] = {g: float(g) for g in shape["ms"]}
    for _, m in dgconv_layers(model):
        m.gate.data = torch.full((len(m.factors),), 0.5)
    c = ResourceConstraint(model, target=slow.base_ms + 3 * 1.5, cost="latency", latency_table=slow)
    assert c.current() == 3.0 and c.o == pytest.approx(4.5) and c.project() == []


def test_projection_resets_the_optimizer_state_of_closed_gates():
    model = create_model("g_resnext_digits", num_classes=10)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.full((len(m.factors),), 0.5)
    opt = torch.optim.SGD([m.gate for _, m in dgconv_layers(model)], lr=0.1, momentum=0.9)
    for _, m in dgconv_layers(model):
        opt.state[m.gate]["momentum_buffer"] = torch.ones(len(m.factors))
    c = ResourceConstraint(model, budget=8)
    closed = c.project(optimizer=opt)
    for name, m in c.layers:
        buf = opt.state[m.gate]["momentum_buffer"]
        for k in range(len(m.factors)):
            assert buf[k].item() == (0.0 if (name, k) in closed else 1.0)


def test_lagrangian_multiplier_grows_over_budget_and_binds_by_gradient():
    model = create_model("g_resnext_digits", num_classes=10)
    for _, m in dgconv_layers(model):
        m.gate.data = torch.full((len(m.factors),), 0.5)  # dense: far over budget
    c = ResourceConstraint(model, budget=8, objective="lagrangian", dual_lr=0.1)
    excess = c.current() / c.o - 1
    assert excess > 0 and float(c.lam) == 0
    loss = torch.tensor(1e-6, requires_grad=True)  # a task loss near zero: the paper's factor would barely pull
    for step in range(3):
        for _, m in c.layers:
            m.gate.grad = None
        out = c(loss)
        lam_used = step * 0.1 * excess
        assert out.item() == pytest.approx(1e-6 + lam_used * excess, rel=1e-4, abs=1e-7)
        assert float(c.lam) == pytest.approx((step + 1) * 0.1 * excess, rel=1e-5)
        out.backward()
        if step > 0:  # gradient lambda/o * dzeta/dg, independent of the task loss
            for _, m in c.layers:
                g = torch.tensor([1.0] * len(m.factors))
                dz = m.in_channels * m.out_channels / math.gcd(m.in_channels, m.out_channels)
                expected = lam_used / c.o * torch.tensor([dz * (p - 1) * math.prod(1 + (q - 1) * gg for j, (q, gg) in
                                                          enumerate(zip(m.factors, g)) if j != k) for k, p in enumerate(m.factors)])
                torch.testing.assert_close(m.gate.grad.double(), expected.double(), rtol=1e-4, atol=1e-9)
    state = c.state_dict()
    fresh = ResourceConstraint(model, budget=8, objective="lagrangian")
    fresh.load_state_dict(state)
    assert float(fresh.lam) == pytest.approx(float(c.lam))
    for _, m in dgconv_layers(model):  # under budget the multiplier decays to 0
        m.gate.data = -torch.full((len(m.factors),), 0.5)
    for _ in range(50):
        c(torch.tensor(1.0))
    assert float(c.lam) == 0.0


@pytest.mark.parametrize("width,limit", [(8, None), (16, None), (None, 4), (8, 2)])
def test_min_group_width_keeps_groups_in_the_allowed_set(width, limit):
    model = create_model("g_resnext_cifar_tiny", num_classes=10, min_group_width=width, max_groups=limit)
    allowed = {}
    for name, m in dgconv_layers(model):
        cap = min(m.in_channels // width if width else m.in_channels, limit or m.in_channels)
        allowed[name] = {g for g in divisors(m.in_channels) if g <= cap}
        assert set(m.reachable_groups) == allowed[name]  # powers of two: every allowed G is reachable
    opt = torch.optim.SGD([m.gate for _, m in dgconv_layers(model)], lr=10.0)
    c = ResourceConstraint(model, budget=min(max(a) for a in allowed.values()))  # reachable by every layer
    x = torch.randn(4, 3, 32, 32)
    for step in range(12):  # random gates, large steps, projection: groups never leave the allowed set
        random_gates(model, step)
        opt.zero_grad()
        c(model(x).square().mean()).backward()
        for _, m in c.layers:
            held = torch.tensor(m.held)
            assert torch.all(m.gate.grad[held] == 0)  # held gates get no gradient
        opt.step()
        c.project(optimizer=opt)
        for name, m in c.layers:
            assert m.groups in allowed[name]
            assert m.groups == math.prod(p for p, b in zip(m.factors, m.binary_gates()) if not b)


def test_min_group_width_errors_and_mixed_primes():
    with pytest.raises(ValueError, match="larger than this layer's channels"):
        DGConv2d(16, 32, 3, min_group_width=17)
    layer = DGConv2d(96, 96, 3, padding=1, min_group_width=12)  # at most 8 groups; D = 8 (3 and 6 unreachable)
    assert layer.reachable_groups == (1, 2, 4, 8) and layer.held == (False, False, False, True, True, True)
    with pytest.raises(ValueError, match="not reachable under min_group_width=12"):
        layer.set_groups(6)
    layer.set_groups(4)
    assert layer.groups == 4 and layer.factors[-3:] == (2, 2, 3)
    plain = torch.nn.Conv2d(96, 96, 3, padding=1, groups=4, bias=False)
    with torch.no_grad():
        for j in range(4):
            layer.weight[j * 24:(j + 1) * 24, j * 24:(j + 1) * 24] = plain.weight[j * 24:(j + 1) * 24]
    x = torch.randn(2, 96, 5, 5)
    torch.testing.assert_close(layer(x), plain(x) + layer.bias[None, :, None, None], rtol=1e-4, atol=1e-4)
    # the limits are part of the state: a layer with other limits refuses the checkpoint
    with pytest.raises(RuntimeError, match="min_group_width"):
        DGConv2d(96, 96, 3, padding=1).load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match="need a G-network"):
        create_model("resnext_cifar_tiny", min_group_width=8)


def test_latency_tables_keep_a_spread_and_name_contaminated_timings(digits_table, tmp_path):
    """Every timing keeps its spread; one far above its layer's dense timing (or of a wide spread) is named, and
    `dgconv train --cost latency` refuses such a table unless trusted."""
    import copy
    import json

    from tests.helpers import cli

    for shape in digits_table.shapes.values():
        assert set(shape["spread"]) == set(shape["ms"]) and all(v >= 0 for v in shape["spread"].values())
    clean = synthetic(digits_table)
    for shape in clean.shapes.values():
        shape["spread"] = {g: 0.05 for g in shape["ms"]}
    assert clean.suspicious() == []
    dirty = copy.deepcopy(clean)
    key = dirty.layers["layer1.0.conv2"]
    dirty.shapes[key]["ms"]["4"] = 10 * dirty.shapes[key]["ms"]["1"]  # a timing taken while something else ran
    dirty.shapes[dirty.layers["layer3.0.conv2"]]["spread"]["2"] = 0.9
    found = dirty.suspicious()
    assert len(found) == 2 and "layer1.0.conv2) at 4 groups: " in found[0] and "10.0x the dense" in found[0]
    assert "layer3.0.conv2) at 2 groups: spread 90%" in found[1]
    dirty.save(tmp_path / "dirty.json")
    clean.save(tmp_path / "clean.json")
    args = ["train", "--cost", "latency", "--budget", "4", "--epochs", "1", "--limit-train", "64", "--no-progress"]
    r = cli(*args, "--latency-table", str(tmp_path / "dirty.json"), "--out", str(tmp_path / "r1"))
    assert r.returncode == 2 and "2 timing(s) look contaminated" in r.stderr and "--trust-latency-table" in r.stderr
    assert not (tmp_path / "r1").exists()
    r = cli(*args, "--latency-table", str(tmp_path / "dirty.json"), "--trust-latency-table", "--out", str(tmp_path / "r2"))
    assert r.returncode == 0, r.stderr
    assert cli(*args, "--latency-table", str(tmp_path / "clean.json"), "--out", str(tmp_path / "r3")).returncode == 0
    # values only a crafted or broken file holds are refused when the table is loaded, before any training
    doc = json.loads((tmp_path / "clean.json").read_text())
    for field, value, message in [("ms", float("inf"), "every timing must be a positive number"),
                                  ("ms", 0.0, "every timing must be a positive number"),
                                  ("ms", 1e308, "every timing must be a positive number"),
                                  ("ms", -1.0, "every timing must be a positive number"),
                                  ("base_ms", -1e9, "base_ms (the rest of the network) must be"),
                                  ("base_ms", float("nan"), "base_ms (the rest of the network) must be")]:
        bad = copy.deepcopy(doc)
        if field == "ms":
            bad["shapes"][key]["ms"]["2"] = value
        else:
            bad["base_ms"] = value
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=re.escape(message)):
            LatencyTable.load(tmp_path / "bad.json")
