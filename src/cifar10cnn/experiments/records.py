"""An ablation folder's runs: their names, their state, and the measures read from each (runs.csv).

    OUT/runs/<variant>_lr<lr>_seed<seed>/    a normal run folder, or one holding diverged.json
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..fileio import atomic_write_text, csv_text
from ..runs import read_metrics

CHANCE = 0.10


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def run_record(run_dir: Path, variant: str, lr: float, seed: int) -> dict | None:
    """The measures of one finished (or diverged) run; None while it is unfinished."""
    finished, diverged = (run_dir / "metrics.json").is_file(), (run_dir / "diverged.json").is_file()
    if not (finished or diverged):
        return None
    history = read_history(run_dir)
    metrics = read_metrics(run_dir) if finished else {}
    val_losses = [h["val_loss"] for h in history]
    finite = [i for i, v in enumerate(val_losses) if math.isfinite(v)]
    turn = min(finite, key=lambda i: val_losses[i]) + 1 if finite else None
    last = history[-1] if history else {}
    gap = last.get("train_eval_accuracy", math.nan) - last.get("val_accuracy", math.nan)
    rises = sum(b["train_loss"] > a["train_loss"] for a, b in zip(history, history[1:], strict=False))
    return {
        "variant": variant, "lr": lr, "seed": seed, "diverged": diverged, "epochs": len(history),
        # stuck at chance without a NaN: the loss sits at ln 10 (every class equally likely) to the end
        "collapsed": not diverged and bool(history) and last.get("val_accuracy", 1.0) <= CHANCE + 0.01,
        # the last epoch's: no early stopping, so nothing is selected on the split this figure is measured on;
        # a run that diverged ended with a NaN model: chance
        "val_accuracy": CHANCE if diverged or not history else last["val_accuracy"],
        "gap": gap, "turn_epoch": turn or 0, "val_loss_turned_up": bool(turn and turn < len(history)),
        "loss_rises": rises, "test_accuracy": metrics.get("test_accuracy", math.nan),
        "test_epoch": metrics.get("best_epoch", 0), "seconds": sum(h["seconds"] for h in history),
        "run": str(run_dir),
    }


def run_name(variant: str, lr: float, seed: int) -> str:
    return f"{variant}_lr{lr:g}_seed{seed}"


def run_state(run_dir: Path) -> str:
    """'finished', 'diverged' (kept as a result), 'unfinished' (resumable) or 'new'."""
    if (run_dir / "metrics.json").is_file():
        return "finished"
    if (run_dir / "diverged.json").is_file():
        return "diverged"
    return "unfinished" if (run_dir / "config.json").is_file() else "new"


def write_runs_csv(out: Path, rows: list[dict]) -> Path:
    atomic_write_text(out / "runs.csv", csv_text(rows) if rows else "")
    return out / "runs.csv"
