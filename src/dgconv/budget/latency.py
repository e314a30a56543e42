"""Latency tables: measured milliseconds of every DGConv layer at every group number it can reach.

A :class:`LatencyTable` is measured once on the target device, dtype, batch and input size
(``dgconv latency MODEL ...`` or :meth:`LatencyTable.measure`) and saved as JSON, so a table measured on a GPU
can drive training anywhere (``dgconv train --cost latency --latency-table table.json``).

What is timed: the forward pass of the *deployed* layer, ``nn.Conv2d(..., groups=G)``, on the layer's input shape
(inference, no autograd), for every reachable ``G``; layers of identical shape are measured once. All group
numbers of a shape are timed round-robin and each gets the median, so a machine that slows down for a moment
slows every candidate alike. The rest of the network is measured as ``base_ms``: the whole deployed network timed
at two reference groupings (every layer at its fewest and at its most groups) minus the table's layer times,
averaged; :meth:`LatencyTable.predict` is then ``base_ms + sum_l t_l(G_l)``.

Trust: each timing keeps its spread over the rounds (the interquartile range over the median). A timing whose
spread exceeds :data:`MAX_SPREAD`, or that is more than :data:`MAX_OVER_DENSE` times the same layer at one group
(the dense convolution does the most arithmetic), was most likely taken while something else ran: such a shape is
timed once more, and :meth:`LatencyTable.suspicious` lists what is still off. ``dgconv latency`` warns about them
and ``dgconv train --cost latency`` refuses such a table unless ``--trust-latency-table``. A file with a timing
that is not a finite positive number of milliseconds, or a ``base_ms`` below minus the layers' fastest times, is
refused when it is loaded.

File format (``"format": "dgconv.latency/1"``)::

    {"format", "model", "device", "device_name", "dtype", "batch", "input_size": [C, H, W], "channels_last",
     "base_ms", "environment": {...},
     "shapes": {"s0": {"in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "bias",
                       "input_hw": [H, W], "ms": {"1": 3.2, "2": 1.9, ...}, "spread": {"1": 0.04, ...}}, ...},
     "layers": {"layer1.0.conv2": "s0", ...}}

Example::

    >>> from dgconv import create_model
    >>> model = create_model("g_resnext_digits", num_classes=10)
    >>> table = LatencyTable.measure(model, (1, 8, 8), reps=3)
    >>> sorted(table.layers) == ["layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2"]
    True
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._env import cpu_name
from ..errors import ConfigError
from ..layer.conv import DGConv2d

__all__ = ["LatencyTable", "LATENCY_FORMAT", "MAX_SPREAD", "MAX_OVER_DENSE", "DTYPES"]

LATENCY_FORMAT = "dgconv.latency/1"

#: Largest interquartile range over median of a timing's rounds that is taken as a clean measurement.
MAX_SPREAD = 0.5
#: A timing above this many times its layer's dense (1-group) timing is taken as contaminated.
MAX_OVER_DENSE = 3.0
#: Milliseconds no single layer takes (about three hours): anything above is a crafted or broken file.
_MAX_MS = 1e7

#: The dtypes a table can be measured in (``dgconv latency --dtype``).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _time_shape(s: dict[str, Any], groups: list[int], batch: int, dev: torch.device, dt: torch.dtype,
                fmt: torch.memory_format, reps: int) -> dict[str, dict[str, float]]:
    """Time one layer shape at each group number (round-robin, medians): ``{"ms": ..., "spread": ...}``. A shape
    whose timings look contaminated is timed once more and the cleaner of the two kept."""
    x = torch.randn(batch, s["in_channels"], *s["input_hw"], device=dev, dtype=dt).contiguous(memory_format=fmt)
    convs = {g: nn.Conv2d(s["in_channels"], s["out_channels"], tuple(s["kernel"]), tuple(s["stride"]),
                          s["padding"] if isinstance(s["padding"], str) else tuple(s["padding"]),
                          tuple(s["dilation"]), g, s["bias"], s["padding_mode"]).to(dev, dt).eval()
             for g in groups}
    if fmt == torch.channels_last:
        convs = {g: c.to(memory_format=torch.channels_last) for g, c in convs.items()}
    fns = {g: (lambda c=c: c(x)) for g, c in convs.items()}
    best: dict[str, dict[str, float]] = {}
    best_bad = -1
    for _attempt in range(2):
        spread: dict[int, float] = {}
        ms = _time_round_robin(fns, dev, reps, spreads=spread)
        entry = {"ms": {str(g): round(v, 6) for g, v in sorted(ms.items())},
                 "spread": {str(g): round(v, 4) for g, v in sorted(spread.items())}}
        bad = len(_suspicious_entries(entry["ms"], entry["spread"]))
        if best_bad < 0 or bad < best_bad:
            best, best_bad = entry, bad
        if not bad:
            break
    return best


def _shape(layer: DGConv2d, input_hw: tuple[int, int]) -> dict[str, Any]:
    padding = list(layer.padding) if isinstance(layer.padding, tuple) else layer.padding
    return {"in_channels": layer.in_channels, "out_channels": layer.out_channels, "kernel": list(layer.kernel_size),
            "stride": list(layer.stride), "padding": padding, "dilation": list(layer.dilation),
            "bias": layer.bias is not None, "padding_mode": layer.padding_mode, "input_hw": list(input_hw)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _spread(values: list[float]) -> float:
    """Interquartile range over median (0 for fewer than 4 values)."""
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    med = statistics.median(values)
    return (q[2] - q[0]) / med if med > 0 else 0.0


def _time_round_robin(fns: Mapping[Any, Callable[[], object]], device: torch.device, reps: int, warmup: int = 2,
                      spreads: dict[Any, float] | None = None) -> dict[Any, float]:
    """Median milliseconds per call of each function, timed in ``reps`` interleaved rounds (with ``spreads``:
    filled with each one's :func:`_spread`)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(1000 * (time.perf_counter() - t))
    if spreads is not None:
        spreads.update({k: _spread(v) for k, v in times.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def _suspicious_entries(ms: Mapping[str, float], spread: Mapping[str, float]) -> list[tuple[str, str]]:
    """``(groups, why)`` for each timing of one shape that looks contaminated."""
    dense = ms.get("1")
    out = []
    for g, v in ms.items():
        if spread.get(g, 0.0) > MAX_SPREAD:
            out.append((g, f"spread {spread[g]:.0%} over the rounds"))
        elif dense and v > MAX_OVER_DENSE * dense:
            out.append((g, f"{v:.3g} ms, {v / dense:.1f}x the dense convolution"))
    return out


@dataclass
class LatencyTable:
    """Measured per-layer latencies (see the module docstring for what is measured and the file format)."""

    model: str | None
    device: str
    device_name: str
    dtype: str
    batch: int
    input_size: tuple[int, int, int]
    channels_last: bool
    shapes: dict[str, dict[str, Any]]
    layers: dict[str, str]
    base_ms: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ lookups
    def time(self, name: str, groups: int) -> float:
        """Milliseconds of layer ``name`` at ``groups`` groups (a :class:`ConfigError` if not measured)."""
        if name not in self.layers:
            raise ConfigError(f"the latency table has no layer {name!r}")
        ms = self.shapes[self.layers[name]]["ms"]
        if str(groups) not in ms:
            raise ConfigError(f"the latency table has no timing of {name!r} at {groups} groups (it has {sorted(map(int, ms))})")
        return float(ms[str(groups)])

    def predict(self, groups: Mapping[str, int]) -> float:
        """Predicted latency of the deployed network with these per-layer groups: ``base_ms + sum_l t_l(G_l)``."""
        missing = sorted(set(self.layers) - set(groups))
        if missing:
            raise ConfigError(f"predict needs the groups of every layer in the table; missing {missing[:3]}")
        return float(self.base_ms or 0.0) + sum(self.time(n, g) for n, g in groups.items() if n in self.layers)

    def check(self, layers: Mapping[str, DGConv2d], input_size: Iterable[int] | None = None) -> None:
        """Raise :class:`ConfigError` unless the table fits these layers: every layer present, with the same
        channels, kernel, stride, padding and dilation, timed at every group number it can reach, and measured
        at ``input_size`` (when given)."""
        fix = "measure a table for this model with `dgconv latency MODEL --input-size C H W --out table.json`"
        if input_size is not None and tuple(int(s) for s in input_size) != tuple(self.input_size):
            raise ConfigError(
                f"the latency table was measured at input size {'x'.join(map(str, self.input_size))}, this model trains at "
                f"{'x'.join(map(str, input_size))}; {fix}"
            )
        absent = [n for n in layers if n not in self.layers]
        if absent:
            raise ConfigError(
                f"the latency table (measured for {self.model or 'another model'}) lacks {len(absent)} of this model's "
                f"{len(layers)} DGConv layers, e.g. {absent[:3]}; {fix}"
            )
        for name, layer in layers.items():
            entry = self.shapes[self.layers[name]]
            want = _shape(layer, tuple(entry["input_hw"]))  # the input size is checked above
            diff = [k for k in want if k != "input_hw" and entry.get(k) != want[k]]
            if diff:
                raise ConfigError(
                    f"the latency table's layer {name!r} differs from this model's in {', '.join(diff)} "
                    f"(table: {', '.join(f'{k}={entry.get(k)}' for k in diff)}; model: "
                    f"{', '.join(f'{k}={want[k]}' for k in diff)}); {fix}"
                )
            lacking = [g for g in layer.reachable_groups if str(g) not in entry["ms"]]
            if lacking:
                raise ConfigError(f"the latency table has no timing of {name!r} at groups {lacking}; {fix}")

    def suspicious(self) -> list[str]:
        """The timings that look contaminated (see the module docstring), one line each; empty for a clean table."""
        out = []
        for key, shape in self.shapes.items():
            users = sorted(n for n, k in self.layers.items() if k == key)
            what = f"{shape['in_channels']}->{shape['out_channels']} at {'x'.join(map(str, shape['input_hw']))}"
            for g, why in _suspicious_entries(shape["ms"], shape.get("spread", {})):
                out.append(f"{what} ({users[0] if users else key}) at {g} groups: {why}")
        return out

    # ------------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return {"format": LATENCY_FORMAT, **d}

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically); returns the path."""
        from .._files import write_json

        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by :meth:`save` (a :class:`ConfigError` for anything else)."""
        from .._files import read_json

        try:
            doc = read_json(path, "latency table")
        except OSError as e:
            raise ConfigError(str(e)) from None
        if not isinstance(doc, dict) or doc.get("format") != LATENCY_FORMAT:
            raise ConfigError(f"{path} is not a dgconv latency table (expected format {LATENCY_FORMAT!r})")
        try:
            fields = {k: doc[k] for k in ("model", "device", "device_name", "dtype", "batch", "input_size",
                                          "channels_last", "shapes", "layers")}
            table = cls(**fields, base_ms=doc.get("base_ms"), environment=doc.get("environment", {}))
            table.input_size = tuple(int(s) for s in table.input_size)  # type: ignore[assignment]
            if not (isinstance(table.batch, int) and table.batch >= 1 and len(table.input_size) == 3
                    and min(table.input_size) >= 1):
                raise ValueError("batch and input_size must be positive integers")
            if not isinstance(table.layers, dict) or not isinstance(table.shapes, dict):
                raise ValueError("'layers' and 'shapes' must be mappings (layer -> shape key, shape key -> its timings)")
            fastest = 0.0
            for name, key in table.layers.items():
                if not isinstance(key, str) or key not in table.shapes:
                    raise ValueError(f"layer {name} names the shape {key!r:.40}, which the table's 'shapes' lack")
                shape = table.shapes[key]
                ms = shape.get("ms") if isinstance(shape, dict) else None
                if not isinstance(ms, dict):
                    raise ValueError(f"shape {key}: 'ms' must map each group number to milliseconds, got "
                                     f"{type(ms).__name__}")
                wrong = [f"{g}: {v!r}" for g, v in ms.items() if not (
                    isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < _MAX_MS)]
                if not ms or wrong:
                    raise ValueError(f"layer {name}: every timing must be a positive number of milliseconds below "
                                     f"{_MAX_MS:g}; got {', '.join(wrong[:3]) or 'none'}")
                fastest += min(ms.values())
            base = table.base_ms
            if base is not None and not (isinstance(base, (int, float)) and -fastest < base < _MAX_MS):
                raise ValueError(f"base_ms (the rest of the network) must be a finite number of milliseconds above "
                                 f"minus the layers' fastest times ({-fastest:.3g}), got {base}")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"it lacks {e}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"{path} is a malformed latency table: {what}") from None
        return table

    # ------------------------------------------------------------------------------------------------ measuring
    @classmethod
    @torch.no_grad()
    def measure(
        cls,
        model: nn.Module,
        input_size: Iterable[int],
        batch: int = 1,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        channels_last: bool = False,
        reps: int = 15,
        model_name: str | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> LatencyTable:
        """Measure every DGConv layer of ``model`` at every reachable group number, and the rest of the network.

        Args:
            model: a model with DGConv layers (left unchanged).
            input_size: ``(C, H, W)`` of one input.
            batch: the batch size to time.
            device, dtype, channels_last: where and how to run (as the deployed network will).
            reps: timed rounds per shape (medians are reported).
            model_name: recorded in the table (default: the registered name when ``create_model`` built it).
            progress: called as ``progress(done, total, what)`` after each measurement.
        """
        dev = torch.device(device)
        dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
        dtype_name = next((k for k, v in DTYPES.items() if v == dt), str(dt))
        size = tuple(int(s) for s in input_size)
        if len(size) != 3 or min(size) < 1 or batch < 1 or reps < 1:
            raise ConfigError(f"input size must be (C, H, W) and batch, reps positive; got {size}, {batch}, {reps}")
        net = copy.deepcopy(getattr(model, "module", model)).to(dev).eval()
        layers = {n: m for n, m in net.named_modules() if isinstance(m, DGConv2d)}
        if not layers:
            raise ConfigError("the model has no DGConv layers: nothing to measure")
        inputs: dict[str, tuple[int, int]] = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, tuple(i[0].shape[-2:])))
                 for n, m in layers.items()]
        try:
            net(torch.zeros(1, *size, device=dev))
        except RuntimeError as e:
            raise ConfigError(f"the model does not accept an input of size {size}: {str(e).splitlines()[0]}") from None
        finally:
            for h in hooks:
                h.remove()
        shapes: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        wanted: dict[str, set[int]] = {}
        for name, layer in layers.items():
            shape = _shape(layer, inputs[name])
            key = next((k for k, v in shapes.items() if {**v, "ms": None} == {**shape, "ms": None}), None)
            if key is None:
                key = f"s{len(shapes)}"
                shapes[key] = {**shape, "ms": {}}
            keys[name] = key
            wanted.setdefault(key, set()).update(layer.reachable_groups)
        total = sum(len(v) for v in wanted.values()) + 2
        done = 0
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for key, groups in wanted.items():
            s = shapes[key]
            s.update(_time_shape(s, sorted(groups), batch, dev, dt, fmt, reps))
            done += len(groups)
            if progress:
                progress(done, total, f"{s['in_channels']}->{s['out_channels']} at {s['input_hw'][0]}x{s['input_hw'][1]}")
        table = cls(
            model=model_name or (getattr(model, "dgconv_cfg", None) or {}).get("name"),
            device=str(dev), device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
            dtype=dtype_name, batch=batch, input_size=size, channels_last=channels_last, shapes=shapes, layers=keys,
            environment={"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "reps": reps},
        )
        table.base_ms = table._measure_base(net, size, batch, dev, dt, fmt, reps, lambda what: None if progress is None
                                            else progress(total, total, what))
        return table

    def _measure_base(self, net: nn.Module, size: tuple[int, ...], batch: int, dev: torch.device, dt: torch.dtype,
                      fmt: torch.memory_format, reps: int, note: Callable[[str], None]) -> float:
        from ..convert.deploy import deploy

        layers = {n: m for n, m in net.named_modules() if isinstance(m, DGConv2d)}
        refs = {"fewest": {n: min(m.reachable_groups) for n, m in layers.items()},
                "most": {n: max(m.reachable_groups) for n, m in layers.items()}}
        nets = {}
        for label, groups in refs.items():
            for n, m in layers.items():
                m.set_groups(groups[n])
            deployed = deploy(net).to(dev, dt).eval()
            nets[label] = deployed.to(memory_format=torch.channels_last) if fmt == torch.channels_last else deployed
        x = torch.randn(batch, *size, device=dev, dtype=dt).contiguous(memory_format=fmt)
        ms = _time_round_robin({k: (lambda m=m: m(x)) for k, m in nets.items()}, dev, reps)
        note("whole network")
        bases = [ms[label] - sum(self.time(n, g) for n, g in refs[label].items()) for label in refs]
        return round(statistics.fmean(bases), 6)

