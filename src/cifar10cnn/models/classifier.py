"""What is trained, saved, evaluated, served and exported: a registered network behind its input normalisation.

    Classifier(uint8 N×3×H×W) = net(Normalize(x))

The normalisation (mean, std buffers) travels with the weights in model.safetensors.
"""

from __future__ import annotations

import torch
from torch import nn

from .contract import ModelContract
from .registry import create_model


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

    def __init__(self, net: ModelContract, mean: list[float], std: list[float]) -> None:
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


def input_normalization(net: ModelContract, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """(mean, std) the network is fed with: its declared `input_normalization`, else the data's."""
    return net.input_normalization or (mean, std)


def parameter_roles(model: Classifier | ModelContract) -> dict[int, set[str]]:
    """{id(parameter): roles} from the network's `param_roles()` declaration (see models/contract.py); keyed
    by identity so it also answers for a part of the model (the linear probe optimises only the head)."""
    net = model.net if isinstance(model, Classifier) else model
    params = dict(net.named_parameters())
    return {id(params[name]): roles for name, roles in net.param_roles().items()}
