"""The epoch primitives: `train_one_epoch`, `evaluate`, `predict_logits`.

Data is one uint8 tensor of N×32×32×3 images resident on the device. A batch is picked by index
and viewed as N×3×32×32 (channels_last for free); the model normalises it. Nothing here touches
single images in Python. Loss and accuracy are accumulated on the device and read once per epoch
(plus a finiteness check every `check_every` steps), so the hot loop does not wait on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainingDiverged
from .runtime import Runtime


def to_batch(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """N×32×32×3 uint8 → N×3×32×32 on the runtime's device, in its memory format. Other inputs
    (e.g. N×D cached features of a frozen backbone) only move to the device."""
    x = images.to(runtime.device, non_blocking=True)
    if x.ndim != 4:
        return x
    x = x.permute(0, 3, 1, 2)
    return x if runtime.channels_last else x.contiguous()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    runtime: Runtime,
    batch_size: int,
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int], None] | None = None,
    check_every: int = 100,
    *,
    augment: Callable | None = None,
    epoch: int = 0,
    generator: torch.Generator | None = None,
    lr_at: Callable[[int], float] | None = None,
    start_step: int = 0,
    label_smoothing: float = 0.0,
    ema=None,
    after_step: Callable[[int], None] | None = None,
) -> dict:
    """One pass over `images[order]` in batches; returns mean train loss and accuracy.

    augment(x, idx, epoch, generator) transforms each uint8 batch; lr_at(step) sets the learning
    rate of every step (global step = start_step + step in this epoch), times each parameter
    group's "lr_scale" (e.g. a lower rate for a pretrained backbone); ema.update(model) and
    after_step(global step number, 1-based) follow each optimizer step.
    """
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    for step, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        x, y = to_batch(images[idx], runtime), labels[idx]
        if augment is not None:
            x = augment(x, idx, epoch, generator)
        if lr_at is not None:
            lr = lr_at(start_step + step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        with runtime.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update(model)
        if after_step is not None:
            after_step(start_step + step + 1)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        if on_batch is not None:
            on_batch(len(idx))
        if (step + 1) % check_every == 0 and not torch.isfinite(loss_sum):
            raise TrainingDiverged(f"loss became {loss_sum.item()} at step {step + 1}")
    mean_loss = loss_sum.item() / len(order)
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"loss became {mean_loss}")
    return {"loss": mean_loss, "accuracy": correct.item() / len(order)}


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
             translate: int = 0) -> dict:
    """Loss, accuracy and logits of `model` on a labelled set."""
    logits = predict_logits(model, images, runtime, batch_size, on_batch, tta, translate)
    labels = labels.cpu()
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "logits": logits,
    }
