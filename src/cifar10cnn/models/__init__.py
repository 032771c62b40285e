"""The model registry: every architecture is registered by name and built with `create_model`.

    @register_model("seed")
    def seed(num_classes=10, **options): ...

    net = create_model("seed", num_classes=10)

`create_model` returns the bare network (input: normalised float images N×3×32×32). Use
`build_classifier` to get the network wrapped with its input normalisation, which is what is
trained, saved, evaluated and (later) served and exported: it takes uint8 images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, **options) -> nn.Module:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](num_classes=num_classes, **options)
    except TypeError as e:
        raise UserError(f"bad options for model {name!r}: {e}") from None


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, size: int = 32) -> int:
    """Forward FLOPs per image (2 × multiply-accumulates of conv and linear layers; a training
    step costs about 3× this)."""
    macs = 0

    def count(module, _inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            macs += output[0].numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return 2 * macs


class Normalize(nn.Module):
    """uint8 (or 0–255 float) images → (x/255 − mean) / std per channel. The one normalisation.

    mean and std are buffers, so they travel with the weights in model.safetensors.
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale - self.shift


class Classifier(nn.Module):
    """normalise → network. Input: N×3×32×32 uint8 images (any memory format). Output: logits."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_classifier(name: str, mean: list[float], std: list[float], num_classes: int = 10, **options) -> Classifier:
    """The network behind its input normalisation: the data's channel statistics, unless the network
    declares the scaling its (pretrained) weights expect in `input_normalization`."""
    net = create_model(name, num_classes=num_classes, **options)
    return Classifier(net, *input_normalization(net, mean, std))


def input_normalization(net: nn.Module, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """(mean, std) the network is fed with: its own `input_normalization` if it declares one, else the data's."""
    return getattr(net, "input_normalization", None) or (mean, std)


# importing the modules registers their models
from . import efficientnet_lite, fast, mobilenet, resnet, seed  # noqa: E402,F401
