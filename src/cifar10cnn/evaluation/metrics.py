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
    m = {
        "test_accuracy": (pred == labels).double().mean().item(),
        "test_loss": torch.nn.functional.cross_entropy(logits, labels).item(),
        "test_images": len(labels),
        "per_class_accuracy": dict(zip(classes, per_class, strict=True)),
        "confusion_matrix": cm.tolist(),
    }
    counts = cm.sum(1)
    if int(counts.min()) != int(counts.max()):  # imbalanced classes: the mean recall over the classes tested
        present = counts > 0
        m["test_balanced_accuracy"] = (cm.diag()[present].double() / counts[present]).mean().item()
    return m


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved near 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def per_class_table(cm: torch.Tensor, classes: list[str]) -> list[dict]:
    """Accuracy (= recall) with its 95% interval, precision, recall and F1 per class."""
    rows = []
    for i, name in enumerate(classes):
        tp, support, predicted = int(cm[i, i]), int(cm[i].sum()), int(cm[:, i].sum())
        recall = tp / support if support else 0.0
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        lo, hi = wilson_interval(tp, support)
        rows.append({"class": name, "accuracy": recall, "ci_low": lo, "ci_high": hi, "precision": precision,
                     "recall": recall, "f1": f1, "support": support})
    return rows


def confused_pairs(cm: torch.Tensor, classes: list[str], top: int = 8) -> list[dict]:
    """Unordered class pairs by how often either is mistaken for the other."""
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            a, b = int(cm[i, j]), int(cm[j, i])
            pairs.append({"pair": (classes[i], classes[j]), "a_as_b": a, "b_as_a": b, "total": a + b})
    return sorted(pairs, key=lambda p: -p["total"])[:top]


def calibration(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Expected calibration error (max-probability confidence, equal-width bins) and the bin table."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for b in range(bins):
        in_bin = (conf > edges[b]) & (conf <= edges[b + 1]) if b else (conf <= edges[1])
        n = int(in_bin.sum())
        if n:
            acc, c = correct[in_bin].mean().item(), conf[in_bin].double().mean().item()
            ece += abs(acc - c) * n / len(labels)
        else:
            acc = c = float("nan")
        table.append({"low": edges[b].item(), "high": edges[b + 1].item(), "count": n, "accuracy": acc,
                      "confidence": c})
    return {"ece": ece, "bins": table, "mean_confidence": conf.double().mean().item(),
            "accuracy": correct.mean().item()}
