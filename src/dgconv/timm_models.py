"""Our registered models in timm's registry: ``timm.create_model("g_resnext50", num_classes=10)`` after
``import dgconv`` (timm is optional; it needs the torchvision built for your torch, see the README's Extras).

Only names timm does not already have are registered (timm's own ``resnet50`` and ``resnext50_32x4d`` stay timm's).
The builders take timm's keyword arguments (``num_classes``, ``in_chans``; ``pretrained=True`` is refused: there are
no pretrained G-networks -- start one from pretrained timm weights with ``dgconv train --init-from``).

``import dgconv`` does not import timm: if timm is already imported the models register at once, otherwise a
post-import hook registers them the moment timm is imported (:func:`install_hook`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from typing import Any

__all__ = ["register", "install_hook", "REGISTERED"]

_logger = logging.getLogger(__name__)

#: The names this process registered with timm.
REGISTERED: list[str] = []


def _builder(name: str) -> Any:
    def build(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; start from a pretrained timm/torchvision ResNet(X)t "
                             f"with `dgconv train --init-from` or dgconv.train.pretrained.load_pretrained")
        for key in [k for k in kwargs if k.startswith("pretrained") or k in ("cache_dir", "features_only")]:
            kwargs.pop(key)
        from .models import create_model

        return create_model(name, **kwargs)

    build.__name__ = name
    build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"dgconv's {name} (see `dgconv models`)."
    return build


def register() -> list[str]:
    """Register every dgconv model timm does not have; return the names registered (idempotent)."""
    import timm
    from timm.models import register_model

    from .models import list_models

    for name in list_models():
        if name in REGISTERED or timm.is_model(name):
            continue
        register_model(_builder(name))
        REGISTERED.append(name)
    return list(REGISTERED)


class _Loader(importlib.abc.Loader):
    """Runs timm's own loader, then registers our models."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        try:
            register()
        except Exception as e:  # noqa: BLE001 - never break `import timm` because of us
            _logger.warning("dgconv could not register its models with timm: %s", e)

    def __getattr__(self, name: str) -> Any:  # resources, is_package, ... from timm's loader
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install_hook() -> None:
    """Register with timm now if it is imported, else when it is (no-op when timm is not installed)."""
    if "timm" in sys.modules:
        try:
            register()
        except Exception as e:  # noqa: BLE001
            _logger.warning("dgconv could not register its models with timm: %s", e)
        return
    if importlib.util.find_spec("timm") is None:
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
