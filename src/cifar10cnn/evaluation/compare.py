"""`cifar10cnn compare RUN...`: several finished runs (e.g. seeds) side by side, as mean ± std.

Figures are the single-view ones (`test_accuracy`, see runs.py); when every run was also evaluated with
the same TTA, its `test_accuracy_tta` is compared too. Per class (single view, or TTA for runs written
before the single-view per-class figures were kept), the test counts of all runs are pooled for a 95%
Wilson interval (n = runs × 1,000 images) and the spread across runs is shown as mean ± std, so a claim
like "ships are easiest, cats hardest" can be checked against seed-to-seed noise.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..errors import UserError
from ..runs import read_metrics
from .metrics import wilson_interval


def _per_class_source(metrics: list[dict]) -> tuple[list[dict], str]:
    """(the per-class figures of each run, which evaluation they are): single view when all runs have it."""
    if all("per_class_accuracy" in m for m in metrics):
        return metrics, "single view"
    if all("per_class_accuracy" in m.get("tta", {}) for m in metrics):
        return [m["tta"] for m in metrics], "TTA"
    raise UserError("the runs have no common per-class figures; run `cifar10cnn evaluate RUN` on each")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_runs(runs: list[Path]) -> dict:
    metrics = [read_metrics(r) for r in runs]
    if any("test_accuracy" not in m for m in metrics):
        raise UserError("a run has no test figures (a tuning trial?); compare finished, tested runs")
    figures, per_class_of = _per_class_source(metrics)
    classes = list(figures[0]["per_class_accuracy"])
    if any(list(f["per_class_accuracy"]) != classes for f in figures):
        raise UserError("the runs were evaluated on different classes")
    acc = [m["test_accuracy"] for m in metrics]
    tta = [m.get("test_accuracy_tta") for m in metrics]
    views = {m.get("tta", {}).get("views") for m in metrics}
    tta_summary = mean_std(tta) if None not in tta and len(views) == 1 else None
    per_class = []
    for c, name in enumerate(classes):
        values = [f["per_class_accuracy"][name] for f in figures]
        correct = sum(f["confusion_matrix"][c][c] for f in figures)
        n = sum(sum(f["confusion_matrix"][c]) for f in figures)
        lo, hi = wilson_interval(correct, n)
        mu, sd = mean_std(values)
        per_class.append({"class": name, "mean": mu, "std": sd, "min": min(values), "max": max(values),
                          "pooled_ci": (lo, hi), "n": n})
    per_class.sort(key=lambda r: -r["mean"])
    mu, sd = mean_std(acc)
    secs = [m.get("train_seconds") for m in metrics if m.get("train_seconds") is not None]
    return {"runs": [str(r) for r in runs], "test_accuracy": acc, "mean": mu, "std": sd,
            "test_accuracy_tta": tta if tta_summary else None, "tta_views": views.pop() if tta_summary else None,
            "tta_mean": tta_summary[0] if tta_summary else None, "tta_std": tta_summary[1] if tta_summary else None,
            "per_class_of": per_class_of,
            "train_seconds": secs, "epochs": [m.get("epochs") for m in metrics],
            "best_epochs": [m.get("best_epoch") for m in metrics], "per_class": per_class}
