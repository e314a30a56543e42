"""Every example in the library's docstrings runs and prints what it says (docs that cannot go stale)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dgconv

MODULES = sorted(m.name for m in pkgutil.walk_packages(dgconv.__path__, "dgconv.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "dgconv.models.timm":  # importing it registers with timm (an optional extra)
        pytest.importorskip("timm")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
