"""Long benchmark runs that survive sittings: each run is a normal run folder (on this machine), and its
figures are kept as one small JSON in benchmarks/results (committed). A run whose JSON exists, or whose
folder is finished, is not trained again — so a table of 20-minute runs can be built over several sittings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

KEEP = ["test_accuracy", "test_accuracy_tta", "epochs", "wall_seconds", "train_seconds", "eval_seconds",
        "budget"]


def save_result(path: Path, metrics: dict, **about) -> dict:
    from cifar10cnn.fileio import atomic_write_json

    result = {**about, **{k: metrics[k] for k in KEEP if k in metrics}}
    if isinstance(metrics.get("tta"), dict):
        result["tta_views"] = metrics["tta"]["views"]
    atomic_write_json(path, result)
    return result


def kept_or_trained(result: Path, run_dir: Path, make_cfg, data, train_now: bool = True, **about) -> dict | None:
    """The kept figures of a run, else those of its finished folder, else (if train_now) a fresh training."""
    from cifar10cnn.runs import read_metrics
    from cifar10cnn.training.engine import train

    if result.is_file():
        print(f"  {result}: finished earlier, not trained again", flush=True)
        return json.loads(result.read_text())
    if (run_dir / "metrics.json").is_file():
        print(f"  {run_dir} is finished: not trained again", flush=True)
        return save_result(result, read_metrics(run_dir), **about)
    if not train_now:
        return None
    _, metrics = train(make_cfg(), run_dir, data=data, overwrite=run_dir.exists())
    return save_result(result, metrics, **about)


def exit_code(main: Callable[[], int]) -> int:
    """Run a benchmark's main(): a bad input (no data set, a bad run folder...) is one line and exit code 2."""
    from cifar10cnn.errors import UserError

    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
