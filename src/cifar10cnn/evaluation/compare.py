"""`cifar10cnn compare RUN...`: several finished runs (e.g. seeds) side by side, as mean ± std.

Per class, the test counts of all runs are pooled for a 95% Wilson interval (n = runs × 1,000
images) and the spread across runs is shown as mean ± std, so a claim like "ships are easiest,
cats hardest" can be checked against seed-to-seed noise.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..errors import UserError
from .metrics import wilson_interval


def _load(run: Path) -> dict:
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.json (not a finished run)")
    return json.loads(path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_runs(runs: list[Path]) -> dict:
    metrics = [_load(r) for r in runs]
    classes = list(metrics[0]["per_class_accuracy"])
    if any(list(m["per_class_accuracy"]) != classes for m in metrics):
        raise UserError("the runs were evaluated on different classes")
    acc = [m["test_accuracy"] for m in metrics]
    per_class = []
    for c, name in enumerate(classes):
        values = [m["per_class_accuracy"][name] for m in metrics]
        correct = sum(m["confusion_matrix"][c][c] for m in metrics)
        n = sum(sum(m["confusion_matrix"][c]) for m in metrics)
        lo, hi = wilson_interval(correct, n)
        mu, sd = mean_std(values)
        per_class.append({"class": name, "mean": mu, "std": sd, "min": min(values), "max": max(values),
                          "pooled_ci": (lo, hi), "n": n})
    per_class.sort(key=lambda r: -r["mean"])
    mu, sd = mean_std(acc)
    secs = [m.get("train_seconds") for m in metrics if m.get("train_seconds") is not None]
    return {"runs": [str(r) for r in runs], "test_accuracy": acc, "mean": mu, "std": sd,
            "train_seconds": secs, "epochs": [m.get("epochs") for m in metrics],
            "best_epochs": [m.get("best_epoch") for m in metrics], "per_class": per_class}
