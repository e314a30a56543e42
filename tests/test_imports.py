"""The package's import graph, drawn from the code (imports inside functions count): no circles, no arrow from the
core up into the trainer or the lab, none from the trainer into the lab, and modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dgconv"
#: The one module that may exceed the size limit, and why (docs/design.md).
LARGE = {
    "dgconv.layer.conv": "DGConv2d, one class: nn.Conv2d's whole signature and state, the gates and their factor order, "
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


#: The layers of the package, bottom up: a module may import its own layer and the layers below it, never above.
LAYERS = ("support", "layer", "models", "convert", "budget", "train", "lab", "top")


def layer_of(module: str) -> str:
    """Which layer a module belongs to: the core's groups (``dgconv.layer``, ``dgconv.models``, ``dgconv.convert``,
    ``dgconv.budget``), the wings (``dgconv.train``, ``dgconv.lab``), the command line on top, and the support
    modules (errors, files, environment) under everything."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "top"
    return parts[1] if parts[1] in LAYERS else "support"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    found = cycles(graph())
    assert found == [], f"import circles: {found}"


def test_arrows_point_down_only():
    """support <- layer <- models <- convert <- budget <- train <- lab <- cli: the core's groups import only the
    groups below them, the core neither wing, the trainer not the lab, nobody the command line (the package's
    ``__init__`` names the public API lazily and is exempt)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
           if a != "dgconv" and rank[layer_of(b)] > rank[layer_of(a)]]
    assert bad == [], bad
    assert {layer_of(m) for m in modules()} == set(LAYERS)  # every group exists (a renamed folder fails here)


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in LARGE, f"{name} has {lines} lines"


def test_import_dgconv_leaves_the_import_system_alone_and_the_0_2_paths_are_gone():
    """No import hooks, no module-class swap: after importing every submodule, sys.meta_path and sys.path_hooks are
    what they were, the package is a plain module, reload works, and the 0.2 paths (dgconv.engine, ...) are gone."""
    code = """
import importlib, pkgutil, sys, types
before = (list(sys.meta_path), list(sys.path_hooks))
import dgconv
mods = [m.name for m in pkgutil.walk_packages(dgconv.__path__, "dgconv.") if m.name not in ("dgconv.models.timm", "dgconv.__main__")]
for name in mods:
    importlib.import_module(name)
assert (list(sys.meta_path), list(sys.path_hooks)) == before
assert type(sys.modules["dgconv"]) is types.ModuleType
for name in mods:
    assert importlib.reload(sys.modules[name]).__spec__.name == name, name
from dgconv import profile
assert callable(profile) and profile.__module__ == "dgconv.convert.profile"
for old in ("engine", "rundir", "config", "data", "sweep", "results", "protocols", "layers", "constraint", "convert.py"):
    try:
        importlib.import_module("dgconv." + old.replace(".py", ""))
    except ModuleNotFoundError:
        pass
    else:
        assert old == "convert.py", old  # dgconv.convert is the conversions package now
"""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True)


def definitions(path: Path) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments; ``if``/``try`` blocks too)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return names


def imported_names() -> list[tuple[str, int, str, str]]:
    """Every ``from <package module> import name`` of the package: (importer, line, module, name)."""
    mods = modules()
    out = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")
                target = ".".join([*base[: len(base) - (node.level - 1)], *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target in mods:
                out += [(name, node.lineno, target, a.name) for a in node.names if f"{target}.{a.name}" not in mods]
    return out


def test_every_name_is_imported_from_the_module_that_defines_it():
    """One address per name: a name comes from the module that defines it (an ``__init__`` that lists it in
    ``__all__`` is its public address), never through a module that imported it from elsewhere."""
    mods = modules()
    bad = []
    for importer, line, target, name in imported_names():
        if mods[target].name == "__init__.py":
            continue
        if name not in definitions(mods[target]):
            bad.append(f"{importer}:{line} imports {name} from {target}, which does not define it")
    assert bad == [], "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    """A name another module uses is public in its own module: no cross-module imports of underscore names."""
    bad = [f"{importer}:{line} imports {name} from {target}" for importer, line, target, name in imported_names()
           if name.startswith("_") and not name.startswith("__")]
    assert bad == [], "\n".join(bad)


def test_modules_export_only_what_they_define():
    """``__all__`` of a module (not a package ``__init__``) lists only names it defines: no re-export shims."""
    bad = []
    for name, path in modules().items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        listed = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
        defined = definitions(path)
        bad += [f"{name}.__all__ lists {x}, defined elsewhere" for names in listed for x in names if x not in defined]
    assert bad == [], "\n".join(bad)


MAX_FUNCTION_LINES = 80


def test_functions_of_a_readable_size():
    """No function or method in the package over 80 lines (docstring included): a long one is several jobs."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == [], long
