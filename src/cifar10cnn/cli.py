"""The `cifar10cnn` command: parse flags, call the library, print. No training logic lives here.

Every error a user can cause is a `UserError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import UserError
from .progress import console, err_console


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str):
        err_console.print(f"{self.prog}: error: {message} (see --help)", markup=False)
        raise SystemExit(2)


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="CIFAR-10 folder (cifar-10-batches-py or its parent); default: $CIFAR10_DIR, "
                                      "else downloaded into the cache")
    p.add_argument("--cache-dir", help="cache folder (default: $CIFAR10CNN_CACHE or ~/.cache/cifar10cnn)")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast precision (default auto: bf16 where the hardware has it, else fp32)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False,
                   help="use NCHW memory format instead of channels_last")
    p.add_argument("--threads", type=int, help="CPU threads (default: all available cores)")


def _training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="seed", help="named recipe (default: seed)")
    p.add_argument("--model", help="model name from `cifar10cnn models`")
    p.add_argument("--epochs", type=int, help="maximum epochs (seed recipe: 50, early stopping usually ends sooner)")
    p.add_argument("--batch-size", type=int, help="training batch size (seed recipe: 32)")
    p.add_argument("--lr", type=float, help="learning rate (seed recipe: 1e-3)")
    p.add_argument("--seed", type=int, help="seed for weights, shuffling and dropout (default 0)")
    _runtime_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cifar10cnn", description="Train, evaluate and benchmark CNNs on CIFAR-10.")
    parser.add_argument("--version", action="version", version=f"cifar10cnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="download (if needed), validate and cache CIFAR-10; print a summary")
    _data_flags(p)

    sub.add_parser("models", help="list the registered models with their trainable parameters")

    p = sub.add_parser("train", help="train a model; evaluates the test set once at the end")
    _training_flags(p)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs, 0 = off (seed recipe: 5)")
    p.add_argument("--subset", type=int, help="train on a stratified slice of N training images (quick runs)")
    p.add_argument("--val-size", type=int, help="validation images held out of the training set (default 5000)")
    p.add_argument("--split-seed", type=int, help="seed of the stratified train/validation split (default 0)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<model>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _data_flags(p)

    p = sub.add_parser("evaluate", help="evaluate a run's best weights on the test set; writes metrics.json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _data_flags(p)

    p = sub.add_parser("bench", help="training and evaluation images/s on real CIFAR-10 batches")
    _training_flags(p)
    p.add_argument("--train-images", type=int, default=6_000, help="images timed for training (after warm-up)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _data_flags(p)
    return parser


# ---------------------------------------------------------------------------------------------


def cmd_data(args) -> None:
    import time

    from .data.cifar10 import channel_stats, load_cifar10, make_split

    t0 = time.perf_counter()
    data = load_cifar10(args.data_dir, args.cache_dir)
    seconds = time.perf_counter() - t0
    split = make_split(data.train_y)
    mean, std = channel_stats(data.train_x[split.train_idx])
    console.print(f"CIFAR-10 from {data.source} (loaded in {seconds:.2f} s)")
    console.print(f"  train {len(data.train_y):,} images → {len(split.train_idx):,} train + {len(split.val_idx):,} "
                  f"validation (stratified, split seed {split.seed}); test {len(data.test_y):,}")
    counts = data.train_y.bincount(minlength=len(data.classes)).tolist()
    console.print("  classes: " + ", ".join(f"{c} ({n:,})" for c, n in zip(data.classes, counts, strict=True)))
    console.print(f"  train-split mean {[round(m, 4) for m in mean]}  std {[round(s, 4) for s in std]}")


def cmd_models(args) -> None:
    from rich.table import Table

    from .models import create_model, list_models, trainable_params

    table = Table("model", "trainable params")
    for name in list_models():
        table.add_row(name, f"{trainable_params(create_model(name)):,}")
    console.print(table)


def _overrides(args, names: list[str]) -> dict:
    return {n: getattr(args, n, None) for n in names}


TRAIN_FIELDS = ["model", "epochs", "batch_size", "lr", "seed", "device", "precision", "channels_last", "threads",
                "patience", "subset", "val_size", "split_seed"]


def cmd_train(args) -> None:
    from .config import RunConfig
    from .training.run import train

    cfg = RunConfig.resolve(args.recipe, _overrides(args, TRAIN_FIELDS))
    run_dir, m = train(cfg, args.out, args.data_dir, args.cache_dir, resume=args.resume, overwrite=args.overwrite)
    console.print(
        f"test accuracy {m['test_accuracy']:.2%} (best epoch {m['best_epoch']} of {m['epochs']}, "
        f"val accuracy {m['best_val_accuracy']:.2%}, {m['train_seconds']:.0f} s training)"
    )
    console.print(f"run folder: {run_dir}")


def _print_metrics(m: dict) -> None:
    from rich.table import Table

    classes = list(m["per_class_accuracy"])
    table = Table("class", "accuracy", title=f"test accuracy {m['test_accuracy']:.2%} on {m['test_images']:,} images")
    for c, a in m["per_class_accuracy"].items():
        table.add_row(c, f"{a:.1%}")
    console.print(table)
    cm = Table("true \\ predicted", *[c[:5] for c in classes], title="confusion matrix (rows: true class)")
    for c, row in zip(classes, m["confusion_matrix"], strict=True):
        cm.add_row(c, *[str(v) for v in row])
    console.print(cm)


def cmd_evaluate(args) -> None:
    from .fileio import atomic_write_json
    from .training.run import evaluate_run
    from .training.runtime import resolve_runtime

    run_dir = args.run_dir
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    from .config import load_run_config

    cfg, _ = load_run_config(run_dir)
    rt = resolve_runtime(args.device, cfg.precision, cfg.channels_last, cfg.threads)
    m = evaluate_run(run_dir, data_dir=args.data_dir, cache_dir=args.cache_dir, runtime=rt)
    path = run_dir / "metrics.json"
    previous = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
    atomic_write_json(path, {**previous, **m})
    if args.json:
        print(json.dumps(m))
    else:
        _print_metrics(m)
        console.print(f"written: {path}")


def cmd_bench(args) -> None:
    from .bench import bench
    from .config import RunConfig
    from .data.cifar10 import load_cifar10

    if args.train_images <= 0:
        raise UserError(f"--train-images must be positive, got {args.train_images}")
    cfg = RunConfig.resolve(args.recipe, _overrides(args, ["model", "batch_size", "lr", "seed", "device", "precision",
                                                           "channels_last", "threads"]))
    data = load_cifar10(args.data_dir, args.cache_dir)
    r = bench(data, cfg, train_images=args.train_images)
    if args.json:
        print(json.dumps(r))
    else:
        console.print(
            f"{r['model']} batch {r['batch_size']}: train {r['train_images_per_s']:,.0f} img/s, "
            f"eval {r['eval_images_per_s']:,.0f} img/s | {r['device']} ({r['device_name']}) {r['precision']} "
            f"{'channels_last ' if r['channels_last'] else ''}{r['threads']} threads, torch {r['torch']}"
        )


COMMANDS = {"data": cmd_data, "models": cmd_models, "train": cmd_train, "evaluate": cmd_evaluate,
            "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        err_console.print(f"error: {e}", markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; a run can be continued with `cifar10cnn train --resume --out RUN_DIR`")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
