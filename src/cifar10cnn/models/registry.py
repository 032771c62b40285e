"""The model registry (timm's pattern): every architecture is registered by name and built with `create_model`.

    @register_model("seed")
    def seed(num_classes=10, **options) -> ModelContract: ...

    net = create_model("seed", num_classes=10)

A registered network implements `ModelContract` (models/contract.py): it declares what training, the linear
probe, Grad-CAM and export need from it. `create_model` returns the bare network (input: normalised float
images N×3×H×W); `build_classifier` (models/classifier.py) puts the input normalisation in front of it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from .contract import ModelContract

_REGISTRY: dict[str, Callable[..., ModelContract]] = {}


def register_model(name: str):
    def decorator(fn: Callable[..., ModelContract]) -> Callable[..., ModelContract]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, **options) -> ModelContract:
    """Build a registered network; a bad option (unknown, wrong type, out of range) is a UserError."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    try:
        net = _REGISTRY[name](num_classes=num_classes, **options)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad options for model {name!r}: {e}") from None
    if not isinstance(net, ModelContract):
        raise TypeError(f"model {name!r} does not implement ModelContract (models/contract.py)")
    return net
