"""Test-set metrics from logits: accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """counts[i, j] = images of true class i predicted as j."""
    return torch.bincount(target * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, labels, len(classes))
    per_class = (cm.diag().double() / cm.sum(1).clamp(min=1)).tolist()
    return {
        "test_accuracy": (pred == labels).double().mean().item(),
        "test_loss": torch.nn.functional.cross_entropy(logits, labels).item(),
        "test_images": len(labels),
        "per_class_accuracy": dict(zip(classes, per_class, strict=True)),
        "confusion_matrix": cm.tolist(),
    }
