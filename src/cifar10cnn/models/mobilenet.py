"""MobileNetV2 for 32×32 inputs (Sandler et al. 2018, arXiv 1801.04381; the CIFAR variant of
kuangliu/pytorch-cifar): stride-1 stem and stride 1 in the second stage, so 32×32 inputs end at 4×4.
2,296,922 parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .contract import ModelContract
from .registry import register_model

# (expansion, out channels, blocks, stride of the first block)
CIFAR_STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]


class InvertedResidual(nn.Module):
    """expand (1×1) → depthwise 3×3 → project (1×1, linear); a residual connection at stride 1."""

    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(
            *conv_bn(c_in, hidden, 1), nn.ReLU(inplace=True),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU(inplace=True),
            *conv_bn(hidden, c_out, 1),
        )
        self.stride = stride
        self.shortcut = None
        if stride == 1 and c_in != c_out:
            self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1))

    def forward(self, x):
        out = self.body(x)
        if self.stride != 1:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))


class MobileNetV2(ModelContract):
    def __init__(self, num_classes: int = 10, stages=CIFAR_STAGES) -> None:
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(3, 32, 3), nn.ReLU(inplace=True)]
        c_in = 32
        for expansion, c_out, n, stride in stages:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, expansion, stride if i == 0 else 1))
                c_in = c_out
        layers += [*conv_bn(c_in, 1280, 1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.fc(self.forward_features(x))

    def forward_features(self, x):
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def cam_layer(self) -> nn.Module:
        return self.features[-3]  # the last 1×1 conv to 1,280 channels


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10) -> nn.Module:
    return MobileNetV2(num_classes)
