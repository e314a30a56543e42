"""deploy / groupify / architecture spec: function preservation, plain modules only, scripting and export."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dgconv import (
    DGConv2d,
    architecture_spec,
    create_model,
    deploy,
    groupify,
    learned_groups,
    load_deployed,
    profile,
    save_deployed,
)
from dgconv.convert.orders import ChannelPermutation
from dgconv.models import model_info


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random binary gates (non-adjacent groupings) and non-trivial BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, DGConv2d):
            m.gate.data = torch.randn(len(m.factors), generator=gen)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def assert_same_function(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    scale = ya.abs().max().clamp_min(1e-6)
    assert ((ya - yb).abs().max() / scale).item() <= 1e-5


@pytest.mark.parametrize(
    "name,size,seed",
    [("g_resnext29_32x4d", (3, 32, 32), 0), ("g_resnext29_32x4d", (3, 32, 32), 1), ("g_resnext_digits", (1, 8, 8), 2),
     ("g_resnext_cifar_tiny", (3, 32, 32), 3), ("g_resnext50", (3, 224, 224), 4)],
)
def test_deployed_g_resnext_equals_training_model(name, size, seed):
    torch.manual_seed(seed)
    g = randomize(create_model(name, num_classes=10, in_chans=size[0]), seed)
    state_before = {k: v.clone() for k, v in g.state_dict().items() if isinstance(v, torch.Tensor)}
    groups = learned_groups(g)
    assert any(not m.grouping().is_contiguous for m in g.modules() if isinstance(m, DGConv2d)), "want non-adjacent groups"
    d, summary = deploy(g, summary=True)
    assert_same_function(g, d, torch.randn(2, *size))
    # a standard ResNeXt with per-layer groups: no DGConv, no permutation module, nothing folded left undone
    assert not any(isinstance(m, (DGConv2d, ChannelPermutation)) for m in d.modules())
    assert summary.inserted == []
    convs = dict(d.named_modules())
    assert {n: convs[n].groups for n in groups} == groups
    assert all(type(convs[n]) is nn.Conv2d for n in groups)
    # parameters really drop to the in-group weights
    assert sum(p.numel() for p in d.parameters()) == profile(g, size).deployed_params
    for n, lp in zip(groups, summary.layers):
        m = convs[n]
        assert lp.params_after == m.out_channels * m.in_channels // m.groups * 9
    # the input model is untouched
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in state_before.items())
    assert sum(isinstance(m, DGConv2d) for m in g.modules()) == len(groups)


def test_deployed_model_scripts_and_exports():
    g = randomize(create_model("g_resnext_cifar_tiny", num_classes=10), 5)
    d = deploy(g)
    x = torch.randn(2, 3, 32, 32)
    scripted = torch.jit.script(d)
    assert_same_function(d, scripted, x)
    exported = torch.export.export(d, (x,))
    assert_same_function(d, exported.module(), x)


def test_onnx_export(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    g = randomize(create_model("g_resnext_digits", num_classes=10), 6)
    d = deploy(g)
    path = tmp_path / "m.onnx"
    torch.onnx.export(d, (torch.randn(1, 1, 8, 8),), str(path), dynamo=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    onnx_groups = {a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"}
    assert {G for G in learned_groups(g).values() if G > 1} <= onnx_groups  # the learned groups are real group convs
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 1, 8, 8)
    (y,) = ort.InferenceSession(str(path)).run(None, {model.graph.input[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), d(x).detach(), rtol=1e-4, atol=1e-4)


def test_spec_rebuilds_resnext_star(tmp_path):
    g = randomize(create_model("g_resnext29_32x4d", num_classes=10), 7)
    d = deploy(g)
    spec = architecture_spec(d)
    assert spec == architecture_spec(g)  # the spec of a G-ResNeXt is that of its deployment
    assert spec["model"] == "resnext29_32x4d" and spec["kwargs"]["groups"] == learned_groups(g)
    json.dumps(spec)
    weights, spec_path = save_deployed(d, tmp_path / "deployed.pt")
    rebuilt = load_deployed(spec_path)
    assert_same_function(d, rebuilt, torch.randn(2, 3, 32, 32))
    star = create_model("resnext29_32x4d", num_classes=10, groups=spec["kwargs"]["groups"])
    star.load_state_dict(torch.load(weights, weights_only=True))
    assert_same_function(d, star.eval(), torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="deploy"):
        save_deployed(g, tmp_path / "nope.pt")


class UserNet(nn.Module):
    """Not a bottleneck: channels 48 -> 32, a 96-channel 3x3 group conv, a 1x1 in between."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 48, 3, padding=1)
        self.b = nn.Conv2d(48, 32, 3, padding=1, groups=16)
        self.c = nn.Conv2d(32, 96, 1)
        self.d = nn.Conv2d(96, 96, 3, padding=1, groups=12, padding_mode="reflect")
        self.head = nn.Linear(96, 5)

    def forward(self, x):
        x = torch.relu(self.b(torch.relu(self.a(x))))
        x = self.d(torch.relu(self.c(x)))
        return self.head(x.mean((2, 3)))


def test_groupify_then_deploy_an_arbitrary_model():
    torch.manual_seed(0)
    net = UserNet().eval()
    g = groupify(net)
    assert isinstance(g.b, DGConv2d) and isinstance(g.d, DGConv2d) and not isinstance(g.a, DGConv2d)
    x = torch.randn(2, 3, 9, 9)
    assert_same_function(net, g, x)  # function preserved at conversion
    assert g.b.groups == 16 and g.d.groups == 12 and g.d.factors == (2, 2, 3, 2, 2, 2)
    # learn something non-adjacent, then deploy: no fold rule knows UserNet, so permutations are inserted, and the
    # orders pass folds what the neighbouring layers can absorb (all of b's here) and gathers the rest (d's)
    g.b.gate.data = torch.tensor([1.0, -1.0, 1.0, -1.0])
    g.d.gate.data = torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
    d, summary = deploy(g, summary=True)
    assert_same_function(g, d, x)
    assert set(summary.inserted) == {"d"}
    assert any(isinstance(m, ChannelPermutation) and not m.identity for m in d.modules())
    assert_same_function(d, torch.jit.script(d), x)
    gathered = deploy(g, orders="gather")  # 0.2's way: every order an index_select
    assert_same_function(g, gathered, x)
    assert sum(isinstance(m, ChannelPermutation) and not m.identity for m in gathered.modules()) == 4


def test_groupify_selectors_and_refusals():
    base = create_model("resnext29_32x4d", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    g = groupify(base)
    assert sum(isinstance(m, DGConv2d) for m in g.modules()) == 9
    assert_same_function(base, g, x)
    assert g.group_conv_names == base.group_conv_names
    g3, rep = groupify(base, include="3x3", report=True)
    # the stem is 3x3 too, but 3 -> 64 channels have gcd 1: no gate, nothing to learn; it stays an nn.Conv2d
    assert type(g3.conv1) is nn.Conv2d and "conv1" not in g3.group_conv_names and "gcd(3, 64) = 1" in rep.skipped["conv1"]
    assert len(rep.converted) == 9 and all(m.factors for m in g3.modules() if isinstance(m, DGConv2d))
    assert_same_function(base, g3, x)
    with pytest.raises(ValueError, match="selects no convolution whose groups can be learned"):
        groupify(base, include=["conv1"])
    gn = groupify(base, include=["layer1.*.conv2"])
    assert sum(isinstance(m, DGConv2d) for m in gn.modules()) == 3
    gc = groupify(base, include=lambda name, conv: conv.in_channels == 512 and conv.groups > 1)
    assert sum(isinstance(m, DGConv2d) for m in gc.modules()) == 3
    assert not any(isinstance(m, DGConv2d) for m in base.modules())
    with pytest.raises(ValueError, match="selects no nn.Conv2d"):
        groupify(create_model("resnet18"))
    tnet = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="ConvTranspose2d, not an nn.Conv2d"):
        groupify(tnet, include=["0"])
    with pytest.raises(ValueError, match="include must be"):
        groupify(base, include="everything")


def test_groupify_torchvision_model():
    tv = pytest.importorskip("torchvision", exc_type=ImportError)
    try:
        net = tv.models.resnext50_32x4d().eval()
    except Exception as e:  # a torchvision built for another torch
        pytest.skip(f"torchvision unusable here: {e}")
    g = groupify(net)
    assert sum(isinstance(m, DGConv2d) for m in g.modules()) == 16
    x = torch.randn(1, 3, 64, 64)
    assert_same_function(net, g, x)
    randomize(g, 9)
    d, summary = deploy(g, summary=True)
    assert summary.inserted == []  # torchvision's Bottleneck folds like ours
    assert_same_function(g, d, x)


def test_cli_deploy_and_groups_from(tmp_path):
    from tests.helpers import cli

    run = tmp_path / "run"
    r = cli("train", "--epochs", "2", "--limit-train", "256", "--budget", "4", "--out", str(run))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "deployed.pt"
    r = cli("deploy", str(run), "--out", str(out), "--torchscript", str(tmp_path / "ts.pt"))
    assert r.returncode == 0, r.stderr
    assert "layer1.0.conv2" in r.stdout and "model total" in r.stdout and "->" in r.stdout
    groups = json.loads((run / "groups.json").read_text())["groups"]
    rebuilt = load_deployed(out)
    assert {n: m.groups for n, m in rebuilt.named_modules() if n in groups} == groups
    from dgconv.train.checkpoint import model_from_checkpoint

    x = torch.randn(4, 1, 8, 8)
    assert_same_function(model_from_checkpoint(run / "last.pt").eval(), rebuilt, x)
    assert_same_function(rebuilt, torch.jit.load(str(tmp_path / "ts.pt")), x)
    # ResNeXt* (Table 6): the plain model trained from scratch with the learned groups
    star = tmp_path / "star"
    r = cli("train", "--model", "resnext_digits", "--budget", "none", "--groups-from", str(run / "groups.json"),
            "--epochs", "1", "--limit-train", "256", "--out", str(star))
    assert r.returncode == 0, r.stderr
    m = model_from_checkpoint(star / "last.pt")
    assert {n: mod.groups for n, mod in m.named_modules() if n in groups} == groups
    assert model_info("g_resnext_digits").plain == "resnext_digits"
