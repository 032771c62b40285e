"""ResNets for 32×32 inputs.

resnet20/32/44/56/110   He et al. 2015 (arXiv 1512.03385, §4.2): 3 stages of n basic blocks with
                        16/32/64 channels, depth 6n+2, option-A shortcuts (stride-2 subsampling and
                        zero-padded channels: no parameters). ResNet-20: 269,722 parameters.
resnet18                the CIFAR variant of ResNet-18 (3×3 stem, no max-pool; kuangliu/pytorch-cifar):
                        stages of 2 blocks, 64/128/256/512 channels, 1×1 projection shortcuts. 11,173,962.
preact_resnet18         the same layout with pre-activation blocks (He et al. 2016, arXiv 1603.05027):
                        BN → ReLU → conv, with the final BN → ReLU before pooling that the paper adds.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .contract import ModelContract
from .registry import register_model


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class ShortcutA(nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def projection(c_in: int, c_out: int, stride: int, norm: bool = True) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, stride, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(c_in, c_out, stride)
        else:
            self.shortcut = projection(c_in, c_out, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str = "B") -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), conv3x3(c_out, c_out)
        self.shortcut = None if stride == 1 and c_in == c_out else projection(c_in, c_out, stride, norm=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class ResNet(ModelContract):
    def __init__(self, block, widths: list[int], blocks: list[int], num_classes: int = 10, shortcut: str = "B",
                 preact: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, widths[0]))
        if not preact:
            self.stem.append(nn.BatchNorm2d(widths[0]))
            self.stem.append(nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stages.append(block(c_in, width, 2 if i > 0 and j == 0 else 1, shortcut))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.head_norm = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.forward_features(x))

    def forward_features(self, x):
        x = self.head_norm(self.stages(self.stem(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def cam_layer(self) -> nn.Module:
        return self.stages[-1].conv2


def _cifar_resnet(depth: int):
    n = (depth - 2) // 6

    def build(num_classes: int = 10) -> nn.Module:
        return ResNet(BasicBlock, [16, 32, 64], [n] * 3, num_classes, shortcut="A")

    build.__doc__ = f"ResNet-{depth} (He et al. 2015, CIFAR, option-A shortcuts)"
    return build


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(_cifar_resnet(_depth))


@register_model("resnet18")
def resnet18(num_classes: int = 10) -> nn.Module:
    return ResNet(BasicBlock, [64, 128, 256, 512], [2, 2, 2, 2], num_classes, shortcut="B")


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int = 10) -> nn.Module:
    return ResNet(PreActBlock, [64, 128, 256, 512], [2, 2, 2, 2], num_classes, preact=True)
