"""Forward passes shared by training, evaluation, prediction and serving: uint8 images in, logits out.

Data is one uint8 tensor of N×32×32×3 images. A batch is picked by index and viewed as N×3×32×32
(channels_last for free); the model normalises it. Nothing here touches single images in Python.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import Runtime


def to_batch(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """N×32×32×3 uint8 → N×3×32×32 on the runtime's device, in its memory format. Other inputs
    (e.g. N×D cached features of a frozen backbone) only move to the device."""
    x = images.to(runtime.device, non_blocking=True)
    if x.ndim != 4:
        return x
    x = x.permute(0, 3, 1, 2)
    return x if runtime.channels_last else x.contiguous()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, runtime: Runtime, batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None, tta: bool = False, translate: int = 0,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for N×32×32×3 uint8 images, in eval mode.

    tta: flip test-time augmentation, the mean of the logits of each image and its mirror image.
    translate (with tta): multi-crop TTA — half the weight on that mean, a quarter each on the same mean
    for the image shifted by `translate` pixels down-right and up-left (reflected edges): 6 views.
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_batch(images[start:start + batch_size], runtime)
        with runtime.autocast():
            logits = _mirrored(model, x) if tta else model(x).float()
            if tta and translate:
                logits = logits / 2 + sum(_mirrored(model, v) for v in shifted_views(x, translate)) / 4
        out.append(logits)
        if on_batch is not None:
            on_batch(len(x))
    return torch.cat(out).cpu() if out else torch.zeros(0, 0)


def tta_views(translate: int) -> int:
    """Forward passes per image of `predict_logits(tta=True)`: flip TTA 2, multi-crop TTA (mirror × 3 shifts) 6."""
    return 6 if translate else 2


def _mirrored(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x).float() + model(x.flip(3)).float()) / 2


def shifted_views(x: torch.Tensor, pixels: int) -> list[torch.Tensor]:
    """The batch shifted by `pixels` towards the bottom-right and towards the top-left, edges reflected
    (as float 0–255 images, in x's memory format)."""
    h, w = x.shape[-2:]
    padded = F.pad(x.float(), (pixels,) * 4, mode="reflect")
    views = [padded[..., :h, :w], padded[..., 2 * pixels:, 2 * pixels:]]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return [v.contiguous(memory_format=fmt) for v in views]


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime,
             batch_size: int = 500, on_batch: Callable[[int], None] | None = None, tta: bool = False,
             translate: int = 0, predict: Callable = predict_logits) -> dict:
    """Loss, accuracy and logits of `model` on a labelled set. predict: how logits are computed (across the
    ranks of a distributed run: each rank's shard, gathered; see training/distributed.py)."""
    logits = predict(model, images, runtime, batch_size, on_batch, tta, translate)
    labels = labels.cpu()
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "logits": logits,
    }
