"""The package's import graph, drawn from the code (imports inside functions count): no circles, no arrow from the
core up into the trainer or the lab, none from the trainer into the lab, and modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dgconv"
#: The one module that may exceed the size limit, and why (docs/design.md).
LARGE = {
    "dgconv.layers": "DGConv2d, one class: nn.Conv2d's whole signature and state, the gates and their factor order, "
                     "the hardware limits, the choice between the fast and reference paths (docs/design.md)",
}
MAX_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, ``TYPE_CHECKING`` blocks included)."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("dgconv")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if not target.startswith("dgconv"):
                    continue
                for alias in node.names:  # `from . import x` imports the submodule x
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in mods else target)
        edges[name] = {t for t in found if t in mods and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("train", "lab"):
        return parts[1]
    return "top" if parts[1:2] in (["cli"], ["__main__"], []) else "core"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    found = cycles(graph())
    assert found == [], f"import circles: {found}"


def test_arrows_point_down_only():
    """core <- train <- lab <- cli: the core imports neither wing, the trainer not the lab, nobody the command line."""
    rank = {"core": 0, "train": 1, "lab": 2, "top": 3}
    bad = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
           if a != "dgconv" and rank[wing(b)] > rank[wing(a)]]
    assert bad == [], bad


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in LARGE, f"{name} has {lines} lines"


def test_public_functions_named_like_their_module_stay_functions():
    """`from dgconv import profile` is the function, even after its submodule was imported first (once it was the
    module then: `dgconv train`, sweeps and tests import dgconv.profile)."""
    import subprocess
    import sys

    code = ("import dgconv.profile, importlib; from dgconv import profile; import dgconv; "
            "assert callable(profile) and profile is dgconv.profile and profile.__module__ == 'dgconv.profile'; "
            "assert importlib.import_module('dgconv.profile').Profile")
    subprocess.run([sys.executable, "-c", code], check=True)
