"""One training epoch: `train_one_epoch`.

Loss and accuracy are accumulated on the device and read once per epoch (plus a finiteness check every
`check_every` steps), so the hot loop does not wait on the host. Batches come from `inference.to_batch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainingDiverged
from ..inference import to_batch
from ..runtime import Runtime


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
    steps: Callable[[], int] | None = None,
) -> dict:
    """One pass over `images[order]` in batches; returns mean train loss and accuracy, and the images trained.

    augment(x, idx, epoch, generator) transforms each uint8 batch; lr_at(step) sets the learning
    rate of every step (global step = start_step + step in this epoch), times each parameter
    group's "lr_scale" (e.g. a lower rate for a pretrained backbone); ema.update(model) and
    after_step(global step number, 1-based) follow each optimizer step. steps(): how many steps this pass takes,
    asked before each (a time budget ends a run's last epoch at a quarter of it, and may move that end while the
    epoch goes); None: all of them.
    """
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    trained = 0
    for step, start in enumerate(range(0, len(order), batch_size)):
        if steps is not None and step >= steps():
            break
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
        trained += len(idx)
        if on_batch is not None:
            on_batch(len(idx))
        if (step + 1) % check_every == 0 and not torch.isfinite(loss_sum):
            raise TrainingDiverged(f"loss became {loss_sum.item()} at step {step + 1}")
    mean_loss = loss_sum.item() / trained
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"loss became {mean_loss}")
    return {"loss": mean_loss, "accuracy": correct.item() / trained, "images": trained}
