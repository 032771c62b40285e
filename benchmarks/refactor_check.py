"""Refactors change no numbers: short fixed-seed runs whose weights and figures are hashed and compared.

    python benchmarks/refactor_check.py record   # before a refactor: writes benchmarks/results/refactor_hashes.json
    python benchmarks/refactor_check.py check    # after it: the same runs; exit 1 if any hash differs

The runs (each `cifar10cnn train` through the library, on real CIFAR-10, seed 0):
    seed            the seed recipe, 2 epochs on a 5,000-image stratified subset
    seed-resumed    the same run stopped after epoch 1 and resumed: must equal `seed` exactly
    fast            the fast recipe, 2 epochs (45,000 images; whitening init, Lookahead off before epoch 4)
    resnet          the resnet recipe, 1 epoch
    seed-aug        the seed-aug recipe, 1 epoch (augmentation, one-cycle AdamW, flip TTA)
    transfer-linear the linear probe, 1,000 training images, 1,000 validation, 3 epochs, 1,000 test images

What is hashed: the weights (every tensor of model.safetensors, by name; the file's metadata may gain
fields) and the figures (test accuracy single-view and with TTA, test loss, per-class accuracy and
confusion matrix of the headline evaluation, epochs, best epoch, best validation accuracy, trainable
parameters, and history.csv without its timing columns), read through `runs.read_metrics`, which
understands every metrics.json schema the project has written. Timings are never hashed. (The kept hashes
were recorded at commit 3e3bb9e, before the engine refactor, with this script as of commit d27389c, which
also drove that older `train(on_epoch=...)`.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "refactor_hashes.json"
TIMING_COLUMNS = {"seconds", "images_per_s"}

CASES = {
    "seed": ("seed", {"epochs": 2, "subset": 5000}, {}),
    "seed-resumed": ("seed", {"epochs": 2, "subset": 5000}, {"stop_after": 1}),
    "fast": ("fast", {"epochs": 2}, {}),
    "resnet": ("resnet", {"epochs": 1}, {}),
    "seed-aug": ("seed-aug", {"epochs": 1}, {}),
    "transfer-linear": ("transfer-linear", {"epochs": 3, "subset": 1000, "val_size": 1000}, {"test_images": 1000}),
}


class Stop(Exception):
    """Raised after an epoch to leave a run unfinished (as Ctrl-C would), resumable."""


def weights_hash(path: Path) -> str:
    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def figures(run: Path) -> dict:
    """The run's figures through `read_metrics` (which reads every metrics.json schema the project has
    written as the current one): single view, TTA, and the headline evaluation's details."""
    from cifar10cnn.runs import read_metrics

    m = read_metrics(run)
    head = m["tta"] if m["test_accuracy_tta"] is not None else m
    with open(run / "history.csv", newline="") as f:
        history = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
    return {
        "test_accuracy": m["test_accuracy"], "test_accuracy_tta": m["test_accuracy_tta"],
        "headline_test_loss": head.get("test_loss"),
        "headline_per_class_accuracy": head["per_class_accuracy"],
        "headline_confusion_matrix": head["confusion_matrix"],
        "epochs": m["epochs"], "best_epoch": m["best_epoch"], "best_val_accuracy": m["best_val_accuracy"],
        "trainable_params": m["trainable_params"], "history": history,
    }


def _train(cfg, out: Path, data, stop_after: int | None = None, resume: bool = False):
    from cifar10cnn.training.engine import train
    from cifar10cnn.training.hooks import Hook

    class StopAfter(Hook):
        def on_epoch_end(self, run, row) -> None:
            if stop_after is not None and row["epoch"] >= stop_after:
                raise Stop

    return train(cfg, out, data=data, resume=resume, hooks=[StopAfter()])


def run_case(name: str, data, work: Path) -> dict:
    from cifar10cnn.config import RunConfig

    recipe, overrides, how = CASES[name]
    cfg = RunConfig.resolve(recipe, {"seed": 0, **overrides})
    if how.get("test_images"):
        data = replace(data, test_x=data.test_x[: how["test_images"]], test_y=data.test_y[: how["test_images"]])
    out = work / name
    if how.get("stop_after"):
        try:
            _train(cfg, out, data, stop_after=how["stop_after"])
            raise SystemExit(f"{name}: the run was not stopped after epoch {how['stop_after']}")
        except Stop:
            pass
        _train(cfg, out, data, resume=True)
    else:
        _train(cfg, out, data)
    figs = figures(out)
    return {"recipe": recipe, "overrides": overrides, **how,
            "weights_sha256": weights_hash(out / "model.safetensors"),
            "figures_sha256": hashlib.sha256(json.dumps(figs, sort_keys=True).encode()).hexdigest(),
            "test_accuracy": figs["test_accuracy"], "test_accuracy_tta": figs["test_accuracy_tta"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["record", "check"])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"hash file (default {RESULTS})")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from kept_runs import exit_code

    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.provenance import provenance

    def run() -> int:
        data = load_cifar10()
        work = Path(tempfile.mkdtemp(prefix="refactor-check-")) if args.keep is None else args.keep
        try:
            got = {name: run_case(name, data, work) for name in args.cases}
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        if got.get("seed-resumed") and got.get("seed") and \
                got["seed-resumed"]["weights_sha256"] != got["seed"]["weights_sha256"]:
            print("seed-resumed: a stopped and resumed run differs from the uninterrupted one")
            return 1
        if args.mode == "record":
            doc = {"about": "benchmarks/refactor_check.py record", **provenance(), "cases": got}
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"recorded {len(got)} cases in {args.results}")
            return 0
        kept = json.loads(args.results.read_text())["cases"]
        bad = 0
        for name, g in got.items():
            k = kept.get(name)
            same = k is not None and all(g[f] == k[f] for f in ("weights_sha256", "figures_sha256"))
            bad += not same
            print(f"{name:16s} {'same' if same else 'DIFFERENT'}  weights {g['weights_sha256'][:12]} "
                  f"figures {g['figures_sha256'][:12]}  test {g['test_accuracy']:.4f}"
                  + (f" (kept {k['weights_sha256'][:12]} {k['figures_sha256'][:12]})" if not same and k else ""))
        print("no numbers changed" if not bad else f"{bad} case(s) changed")
        return 1 if bad else 0

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
