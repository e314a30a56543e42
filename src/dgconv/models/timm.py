"""Our registered models in timm's registry, by an explicit act: ``import dgconv.models.timm`` (or
:func:`register`), then ``timm.create_model("g_resnext50", num_classes=10)``. timm is optional; it needs the
torchvision built for your torch (the README's Extras).

Only names timm does not already have are registered (timm's own ``resnet50`` and ``resnext50_32x4d`` stay timm's).
The builders take timm's keyword arguments (``num_classes``, ``in_chans``; ``pretrained=True`` is refused: there are
no pretrained G-networks -- start one from pretrained timm weights with ``dgconv train --init-from``).

Importing this module imports timm and registers every dgconv model timm does not have; ``import dgconv`` alone
never touches timm nor Python's import system.

Example::

    import timm
    import dgconv.models.timm  # noqa: F401  (registers dgconv's models with timm)

    model = timm.create_model("g_resnext29_32x4d", num_classes=10)
"""

from __future__ import annotations

from typing import Any

__all__ = ["register", "REGISTERED"]


#: The names this process registered with timm.
REGISTERED: list[str] = []


def _builder(name: str) -> Any:
    def build(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; start from a pretrained timm/torchvision ResNet(X)t "
                             f"with `dgconv train --init-from` or dgconv.train.pretrained.load_pretrained")
        for key in [k for k in kwargs if k.startswith("pretrained") or k in ("cache_dir", "features_only")]:
            kwargs.pop(key)
        from .registry import create_model

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

    from .registry import list_models

    for name in list_models():
        if name in REGISTERED or timm.is_model(name):
            continue
        register_model(_builder(name))
        REGISTERED.append(name)
    return list(REGISTERED)


register()
