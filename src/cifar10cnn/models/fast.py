"""`fast`: a small, wide, residual-free network built to train to 94% in about ten epochs.

Written from the ideas of Keller Jordan's airbench94 (arXiv 2404.00498) and Page's "How to train
your ResNet", in this project's own code:

    whiten   2×2 conv, 3 → 24 channels, no padding (32 → 31 px), weights fixed from the data:
             ± the eigenvectors of the training images' 2×2-patch covariance, each divided by
             sqrt(eigenvalue + eps), so the layer's outputs are decorrelated with unit variance.
             Its weights never train; its bias trains for the recipe's first `whiten_bias_epochs`.
    GELU
    3 conv groups (64, 256, 256 channels):  conv 3×3 → max-pool 2 → BN → GELU → conv 3×3 → BN → GELU
             (31 → 15 → 7 → 3 px)
    max-pool 3 → Linear(256, 10, no bias) → × 1/9

Other choices, each an option so its worth can be measured (the `fast` recipe's switches):
    dirac=True          each conv starts as an identity on its first input channels (an implicit
                        residual: a deep, plain network that begins close to a shallow one)
    bn_weight=False     BatchNorm scales fixed at 1, only the biases train (momentum 0.4, eps 1e-12)
    act="gelu"          or "relu"
    whiten=True         False: a plain trainable 2×2 conv in its place
    widths=(64, 256, 256)  the groups' channels (`fast95`: 128, 384, 384; `fast96`: 128, 512, 512)
    depth=2             3: a third conv per group with a residual around the last two (airbench96)
    bn_momentum=0.4     PyTorch's convention (airbench96: PyTorch's default, 0.1)

`init_from_data(x)` (called by training on new runs, with a sample of normalised training images)
computes the whitening weights. 1,971,352 trainable parameters (the 288 whitening weights are fixed),
236 MFLOPs per image forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .contract import ModelContract
from .registry import register_model

WHITEN_EPS = 5e-4  # added to the eigenvalues: keeps the flattest directions from being amplified without bound


def patch_rows(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """All size×size patches of N×C×H×W images as rows: (N·(H−size+1)·(W−size+1)) × (C·size·size), in the
    (channel, row, column) order of a conv weight."""
    n, c, h, w = x.shape
    p = x.float().unfold(2, size, 1).unfold(3, size, 1)  # N×C×H'×W'×size×size
    return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


def patch_covariance(x: torch.Tensor, size: int = 2, chunk: int = 500) -> torch.Tensor:
    """The (uncentred: the images are normalised) covariance of the images' size×size patches, in float64,
    accumulated over chunks of images so memory stays small."""
    d = x.shape[1] * size * size
    cov, count = torch.zeros(d, d, dtype=torch.float64, device=x.device), 0
    for start in range(0, len(x), chunk):
        rows = patch_rows(x[start:start + chunk], size).double()
        cov += rows.T @ rows
        count += len(rows)
    return cov / count


def whitening_weights(x: torch.Tensor, size: int = 2, eps: float = WHITEN_EPS) -> torch.Tensor:
    """(2·C·size²)×C×size×size conv weights that whiten the images' patches: rows ± v / sqrt(λ + eps) for
    each eigenvector v and eigenvalue λ of the patch covariance, largest λ first. Each pair (+v, −v) keeps
    both signs of a direction through the GELU."""
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(x, size))  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).float()
    filters = filters.view(-1, x.shape[1], size, size)
    return torch.cat([filters, -filters])


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed (or trainable) scale, eps 1e-12; momentum 0.4 (airbench's 0.6 in Keras' convention) by
    default."""

    def __init__(self, channels: int, weight: bool = False, momentum: float = 0.4) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(weight)


def _activation(act: str) -> nn.Module:
    if act == "gelu":
        return nn.GELU()
    if act == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"act must be 'gelu' or 'relu', got {act!r}")


class ConvGroup(nn.Module):
    """conv → max-pool 2 → BN → act → conv → BN → act; depth 3 adds a third conv → BN and a residual around the
    last two convs (x + conv3(conv2(x)), the activation after the sum: airbench96)."""

    def __init__(self, c_in: int, c_out: int, act: str, bn_weight: bool, depth: int = 2,
                 bn_momentum: float = 0.4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_out, bn_weight, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = BatchNorm(c_out, bn_weight, bn_momentum)
        if depth == 3:
            self.conv3 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.norm3 = BatchNorm(c_out, bn_weight, bn_momentum)
        self.depth = depth
        self.act = _activation(act)

    def convs(self) -> tuple[nn.Conv2d, ...]:
        return (self.conv1, self.conv2, self.conv3) if self.depth == 3 else (self.conv1, self.conv2)

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        if self.depth == 3:
            return self.act(x + self.norm3(self.conv3(self.act(self.norm2(self.conv2(x))))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(ModelContract):
    def __init__(self, num_classes: int = 10, widths=(64, 256, 256), whiten: bool = True, dirac: bool = True,
                 bn_weight: bool = False, act: str = "gelu", scale: float = 1 / 9, depth: int = 2,
                 bn_momentum: float = 0.4) -> None:
        super().__init__()
        if depth not in (2, 3):
            raise ValueError(f"depth must be 2 or 3 convs per group, got {depth!r}")
        if not 0 < bn_momentum <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        nn.init.zeros_(self.whiten.bias)
        self.whiten.weight.requires_grad_(not whiten)  # fixed from the data when whitening
        self.whitening = whiten
        self.act = _activation(act)
        groups, c_in = [], 24
        for width in widths:
            groups.append(ConvGroup(c_in, width, act, bn_weight, depth, bn_momentum))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.scale = scale
        if dirac:
            for group in self.groups:
                for conv in group.convs():
                    with torch.no_grad():
                        nn.init.dirac_(conv.weight[:conv.in_channels])  # out channel i copies in channel i

    @property
    def needs_data_init(self) -> bool:
        return self.whitening

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the whitening weights from N×3×H×W normalised training images (a few thousand suffice)."""
        if self.whitening:
            self.whiten.weight.copy_(whitening_weights(x, self.whiten.kernel_size[0]))

    def forward(self, x):
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.scale

    def get_classifier(self) -> nn.Linear:
        return self.head

    def forward_features(self, x):
        """The pooled features (the last group's width), scaled (the head has no bias: head(features) = forward(x))."""
        return self.pool(self.groups(self.act(self.whiten(x)))).flatten(1) * self.scale

    def cam_layer(self) -> nn.Module:
        return self.groups[-1].convs()[-1]

    def param_roles(self) -> dict[str, set[str]]:
        """+ the whitening stem's bias: trained for the recipe's first `whiten_bias_epochs` only."""
        return {**super().param_roles(), "whiten.bias": {"whiten_bias"}}


@register_model("fast")
def fast(num_classes: int = 10, **options) -> nn.Module:
    return FastNet(num_classes=num_classes, **options)
