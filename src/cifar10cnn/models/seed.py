"""The seed's Keras CNN, exactly (../shared/seed/SEED.md).

    Conv2D(64, 3×3, same, relu) → BatchNormalization → MaxPool 2×2
    Conv2D(128, …)              → BatchNormalization → MaxPool 2×2
    Conv2D(256, …)              → BatchNormalization → MaxPool 2×2
    Flatten → Dense 256 relu → Dropout 0.5 → Dense 128 relu → Dropout 0.5 → Dense 10 (softmax in the loss)

Keras defaults where the seed is silent: Glorot-uniform kernels, zero biases, BatchNorm momentum
0.99 (PyTorch momentum 0.01) and epsilon 1e-3. Note the order: Keras applies the activation inside
Conv2D, so BatchNorm comes *after* the ReLU. Flatten follows Keras' channels-last order (H, W, C),
so Keras weights map one-to-one. 1,454,730 trainable parameters.

Options (used by ablation experiments; defaults give the seed model):
    filters=(64, 128, 256), batchnorm=True, dropout=0.5
"""

from __future__ import annotations

from torch import nn

from .contract import ModelContract
from .registry import register_model


class SeedCNN(ModelContract):
    def __init__(self, num_classes: int = 10, filters=(64, 128, 256), batchnorm: bool = True, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in filters:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01))
            layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** len(filters)
        self.classifier = nn.Sequential(
            nn.Linear(side * side * c_in, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Keras glorot_uniform
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        # Keras Flatten on NHWC: (H, W, C) order. On channels_last tensors this permute is free.
        return self.classifier(x.permute(0, 2, 3, 1).flatten(1))

    def get_classifier(self) -> nn.Linear:
        return self.classifier[-1]

    def forward_features(self, x):
        """The 128-d input of the last Dense layer."""
        return self.classifier[:-1](self.features(x).permute(0, 2, 3, 1).flatten(1))

    def cam_layer(self) -> nn.Module:
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1]


@register_model("seed")
def seed(num_classes: int = 10, **options) -> nn.Module:
    return SeedCNN(num_classes=num_classes, **options)
