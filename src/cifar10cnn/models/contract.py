"""What a network declares so that training, the linear probe, Grad-CAM and export never guess from names.

Every registered model subclasses `ModelContract` (an `nn.Module`) and declares:

    input_normalization   (mean, std) on the 0–1 scale that its (pretrained) weights expect, or None: the
                          training split's channel statistics are used
    input_size            the side of the uint8 images the classifier takes (32 for CIFAR-10)
    get_classifier()      the classification head, an nn.Linear: the linear probe trains only it; a
                          backbone learning rate scale applies to everything else
    forward_features(x)   normalised images → the head's input (N×D): what the linear probe caches
    cam_layer()           the layer whose output Grad-CAM weighs (a conv block's N×C×H×W output)
    init_from_data(x)     optional data-dependent initialisation, run on new runs with normalised training
                          images when `needs_data_init` is True (e.g. a whitening stem)
    param_roles()         {parameter name: roles}: "head" (everything else is the backbone: `backbone_lr_scale`),
                          "norm" (BatchNorm-like: `norm_lr_scale`), "no_decay" (no weight decay unless the
                          config's `decay_bn_bias`), "whiten_bias" (trained only for the config's
                          `whiten_bias_epochs`). The default finds "head" from get_classifier(), "norm" from the
                          normalisation modules and "no_decay" for 1-D parameters (biases, norm scales and
                          shifts); a model adds or changes its own.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class ModelContract(nn.Module):
    input_normalization: tuple[list[float], list[float]] | None = None
    input_size: int = 32
    needs_data_init: bool = False

    def get_classifier(self) -> nn.Linear:
        raise NotImplementedError(f"{type(self).__name__} must declare get_classifier()")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must declare forward_features()")

    def cam_layer(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must declare cam_layer()")

    def init_from_data(self, x: torch.Tensor) -> None:
        """Called once on new runs when `needs_data_init`, with N×3×H×W normalised training images."""

    def param_roles(self) -> dict[str, set[str]]:
        roles: dict[str, set[str]] = {}
        head = {id(p) for p in self.get_classifier().parameters()}
        norm = {id(p) for m in self.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
        for name, p in self.named_parameters():
            tags = {"head"} if id(p) in head else set()
            tags |= {"norm"} if id(p) in norm else set()
            tags |= {"no_decay"} if p.ndim <= 1 else set()
            if tags:
                roles[name] = tags
        return roles
