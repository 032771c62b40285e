"""The `cifar10cnn` command: parse flags, call the library, print. No training logic lives here.

Every error a user can cause is a `UserError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
    p.add_argument("--data-dir", help="CIFAR folder (cifar-10-batches-py, cifar-100-python or its parent); default: "
                                      "$CIFAR10_DIR / $CIFAR100_DIR, else downloaded into the cache")
    p.add_argument("--cache-dir", help="cache folder (default: $CIFAR10CNN_CACHE or ~/.cache/cifar10cnn)")


def _dataset_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data set (docs/datasets.md)")
    g.add_argument("--dataset", help="cifar10 (default) | cifar100 | cifar100:coarse | folder:PATH (one subfolder "
                                     "per class, or train/ val/ test/ folders of them)")
    g.add_argument("--image-size", type=int, metavar="PIXELS",
                   help="decode a folder's images to PIXELS×PIXELS (default 32; more for models with global pooling, "
                        "e.g. the transfer models); CIFAR's are 32")
    g.add_argument("--data-memory", type=float, metavar="GIB",
                   help="memory a folder's decoded images may take (default: half of this machine's RAM)")
    g.add_argument("--max-unreadable", type=float, default=0.01, metavar="FRACTION",
                   help="a folder with more images that cannot be decoded is refused (default 0.01: 1%%)")


def _folder_limits(args):
    from .data.folder import FolderLimits

    if args.data_memory is not None and not args.data_memory > 0:
        raise UserError(f"--data-memory must be a positive number of GiB, got {args.data_memory}")
    if not 0 <= args.max_unreadable <= 1:
        raise UserError(f"--max-unreadable must be a fraction between 0 and 1, got {args.max_unreadable}")
    return FolderLimits(args.data_memory, args.max_unreadable)


def _only_32(args, command: str) -> None:
    if args.image_size not in (None, 32):
        raise UserError(f"{command} trains on 32×32 images; --image-size is for train, bench and data")


def _dataset(args) -> str | None:
    """--dataset as config.json records it (a folder as its absolute path), or None when not given."""
    from .data.dataset import canonical_name

    return canonical_name(args.dataset) if args.dataset is not None else None


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast precision (default auto: bf16 where the hardware has it, else fp32)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False,
                   help="use NCHW memory format instead of channels_last")
    p.add_argument("--threads", type=int, help="CPU threads (default: all available cores)")


def _training_flags(p: argparse.ArgumentParser) -> None:
    from .recipes import RECIPES

    p.add_argument("--recipe", help=f"named recipe: {', '.join(RECIPES)} (default seed)")
    p.add_argument("--model", help="model name from `cifar10cnn models`")
    p.add_argument("--epochs", type=int, help="maximum epochs (seed recipe: 50, early stopping usually ends sooner)")
    p.add_argument("--batch-size", type=int, help="training batch size (seed recipe: 32)")
    p.add_argument("--lr", type=float, help="learning rate (seed recipe: 1e-3)")
    p.add_argument("--seed", type=int, help="seed for weights, shuffling and dropout (default 0)")
    _runtime_flags(p)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="download (if needed), validate and cache a data set; print a summary (a "
                                    "folder's: per-class counts, image sizes, unreadable files, duplicates)")
    _dataset_flags(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _data_flags(p)


def _add_models(sub) -> None:
    sub.add_parser("models", help="list the registered models with their trainable parameters")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model; evaluates the test set once at the end")
    _training_flags(p)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs, 0 = off (seed recipe: 5)")
    p.add_argument("--subset", type=int, help="train on a stratified slice of N training images (quick runs)")
    p.add_argument("--val-size", type=int, help="validation images held out of the training set (default: a "
                                                 "folder's val/, else a tenth: 5,000 for CIFAR)")
    p.add_argument("--split-seed", type=int, help="seed of the stratified train/validation split (default 0)")
    p.add_argument("--final", action="store_true", help="train on all training images (CIFAR's 50,000; no "
                                                         "validation split, no early stopping); test once at the end")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="fit the whole run in this many minutes: epochs planned from measured speed; without "
                        "--recipe, also the recipe expected to be most accurate in that time on this machine")
    p.add_argument("--config", type=Path, help="start from a saved config.json (reruns a run exactly)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set label_smoothing=0.1 --set flip=random")
    p.add_argument("--out", type=Path, help="run folder (default runs/<model>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--report", action="store_true", help="write the HTML report of the run when it finishes")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="live loss, accuracy, lr and images/s in RUN/tensorboard (needs cifar10cnn[tensorboard])")
    g = p.add_argument_group("under torchrun (docs/distributed.md)")
    g.add_argument("--dist-backend", default="auto", choices=["auto", "gloo", "nccl"],
                   help="process-group backend (default auto: gloo on CPU, nccl on CUDA)")
    g.add_argument("--dist-bn", default="reduce", choices=["reduce", "broadcast", "sync"],
                   help="BatchNorm across ranks: reduce (default: per-rank statistics, running averages reduced "
                        "each epoch), broadcast (rank 0's buffers every step), sync (SyncBatchNorm, CUDA only)")
    g.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="a collective waiting longer than this (a rank died or hangs) stops the run (default 600)")
    _dataset_flags(p)
    _data_flags(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best weights on the test set; writes metrics.json")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (mean of image and mirror)")
    p.add_argument("--tta-translate", type=int, default=0, metavar="PIXELS",
                   help="with --tta: multi-crop TTA, also the image shifted by ± PIXELS (6 views; the fast "
                        "recipe's is 1)")
    _data_flags(p)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report (and its PNGs) for a finished run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="HTML file to write (default RUN_DIR/report.html)")
    _data_flags(p)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify image files or folders (PNG, JPEG, BMP, WebP) with a trained run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (mean of image and mirror)")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="several finished runs (e.g. seeds): accuracy mean ± std, per-class ranking")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--json", action="store_true")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX and verify it with onnxruntime")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", type=Path, help="file to write (default RUN_DIR/model.onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--check-images", type=int, default=256, help="test images for the parity check (default 256)")
    _data_flags(p)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP service + web page for a trained run (FastAPI + uvicorn)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only; "
                                                        "any other needs --token or --insecure)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=64, help="images per forward pass at most (default 64)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="wait for more requests at most this long (5)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="request body limit in MB (default 8)")
    p.add_argument("--max-files", type=int, default=64, help="images per request at most (default 64)")
    p.add_argument("--max-queue", type=int, default=1024, help="queued images before answering 503 (default 1024)")
    p.add_argument("--max-inflight", type=int, default=64, help="API requests served at once before answering "
                                                                 "503 (default 64)")
    p.add_argument("--max-decode-mb", type=float, default=128.0,
                   help="memory for decoding images at once, and for one image at most (default 128)")
    p.add_argument("--decode-threads", type=int, default=2, help="threads decoding uploads (default 2)")
    p.add_argument("--read-timeout", type=float, default=30.0,
                   help="seconds a client has to send a whole request (default 30)")
    p.add_argument("--token", default=os.environ.get("CIFAR10CNN_TOKEN"),
                   help="require `Authorization: Bearer TOKEN` on /v1/ (default: $CIFAR10CNN_TOKEN)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also accept requests for this Host name (default: loopback names only when bound to "
                        "loopback; any name otherwise)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL",
                   help="let pages from this origin call the API, e.g. https://example.org (default: none)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="inference engine; auto (default): onnxruntime when installed (measured faster for "
                        "serving), else torch")


def _add_loadtest(sub) -> None:
    p = sub.add_parser("loadtest", help="load a running `serve` on this machine; latency percentiles and images/s")
    p.add_argument("url", help="e.g. http://127.0.0.1:8000 (loopback only)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument("--image", type=Path, help="image file to send (default: a generated 32×32 PNG)")
    p.add_argument("--token", default=os.environ.get("CIFAR10CNN_TOKEN"),
                   help="bearer token of a `serve --token` server (default: $CIFAR10CNN_TOKEN)")
    p.add_argument("--json", action="store_true")


def _add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="test the seed's claims: its variants × learning rates × seeds, one verdict "
                                      "per claim (resumable)")
    p.add_argument("--out", type=Path, default=Path("runs/ablate"), help="experiment folder (default runs/ablate)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant and learning rate (default 3)")
    p.add_argument("--variants", nargs="+", metavar="NAME",
                   help="variants of the seed model (default: all; see `cifar10cnn ablate --list`)")
    p.add_argument("--lrs", nargs="+", type=float, metavar="LR",
                   help="learning rates; the first is where the other claims are judged (default 1e-3 3e-3 1e-2)")
    p.add_argument("--lr-variants", nargs="+", metavar="NAME",
                   help="variants trained at every learning rate (default: seed no-batchnorm, the stability "
                        "claim's pair; the others train at the first lr only); 'all' = the full grid")
    p.add_argument("--subset", type=int, default=5_000,
                   help="training images per run, stratified (default 5000; 0 = the whole 45,000-image split)")
    p.add_argument("--epochs", type=int, default=12, help="epochs per run, no early stopping (default 12)")
    p.add_argument("--val-size", type=int, default=5_000, help="validation images held out (default 5000)")
    p.add_argument("--train-eval-images", type=int, default=5_000,
                   help="training images evaluated in eval mode each epoch, for the train−val gap (default 5000)")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    p.add_argument("--analyze-only", action="store_true", help="train nothing: rebuild the pages from finished runs")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="every run logs live scalars to RUN/tensorboard (watch with tensorboard --logdir OUT)")
    _runtime_flags(p)
    _dataset_flags(p)
    _data_flags(p)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="tune learning rate, batch size, weight decay and dropout with Optuna "
                                    "(SQLite or PostgreSQL study, resumable, parallel workers)")
    p.add_argument("--model", default="seed", help="model to tune (default seed)")
    p.add_argument("--recipe", default="seed", help="recipe the trials start from (default seed)")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should hold in all (default 20)")
    p.add_argument("--study", help="study name (default <model>-tune)")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user:pw@host/db (default: SQLite file "
                                     "OUT/study.db)")
    p.add_argument("--out", type=Path, help="folder for trial runs and results (default runs/tune/<study>)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the recipe's)")
    p.add_argument("--subset", type=int, help="training images per trial, stratified (default: all 45,000)")
    p.add_argument("--val-size", type=int, help="validation images per trial, held out of the training set (default: "
                                                 "a folder's val/, else a tenth: 5,000 for CIFAR); fewer are quicker "
                                                 "and noisier")
    p.add_argument("--time-budget", type=float, metavar="MINUTES", help="minutes per trial (epochs planned)")
    p.add_argument("--patience", type=int, help="early-stopping patience per trial (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (reproducible single-worker studies)")
    p.add_argument("--final", action="store_true", help="then retrain the best trial's settings and the recipe's on "
                                                         "all 50,000 images under the same budget; test once each")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="every run logs live scalars to RUN/tensorboard (watch with tensorboard --logdir OUT)")
    _runtime_flags(p)
    _dataset_flags(p)
    _data_flags(p)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="training and evaluation images/s on real CIFAR-10 batches")
    _training_flags(p)
    p.add_argument("--train-images", type=int, default=6_000, help="images timed for training (after warm-up)")
    p.add_argument("--eval-images", type=int, default=10_000, help="test images timed for evaluation")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set flip=random --set crop_padding=4")
    p.add_argument("--flops", action="store_true",
                   help="also the model's FLOPs per image, the GFLOP/s achieved and this device's attainable GFLOP/s "
                        "(a large matmul and 3×3 convolution, measured)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _dataset_flags(p)
    _data_flags(p)


SUBCOMMANDS = (_add_data, _add_models, _add_train, _add_evaluate, _add_report, _add_predict, _add_compare, _add_export,
               _add_serve, _add_loadtest, _add_ablate, _add_tune, _add_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cifar10cnn", description="Train, evaluate and benchmark CNNs on CIFAR-10.")
    parser.add_argument("--version", action="version", version=f"cifar10cnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# ---------------------------------------------------------------------------------------------


def cmd_data(args) -> None:
    import time

    from .data.cifar import ARCHIVES
    from .data.dataset import channel_stats, make_split
    from .data.loading import load_dataset

    name = _dataset(args) or "cifar10"
    if name.startswith("folder:"):
        return _folder_summary(Path(name[len("folder:"):]), args)
    t0 = time.perf_counter()
    data = load_dataset(name, args.data_dir, args.cache_dir)
    seconds = time.perf_counter() - t0
    split = make_split(data.train_y, n_classes=len(data.classes))
    mean, std = channel_stats(data.train_x[split.train_idx])
    counts = data.train_y.bincount(minlength=len(data.classes)).tolist()
    if args.json:
        print(json.dumps({"dataset": name, "source": data.source, "classes": dict(zip(data.classes, counts,
                                                                                        strict=True)),
                          "train_images": len(data.train_y), "test_images": len(data.test_y), "mean": mean,
                          "std": std}))
        return
    console.print(f"{ARCHIVES[name].title} from {data.source} (loaded in {seconds:.2f} s)")
    console.print(f"  train {len(data.train_y):,} images → {len(split.train_idx):,} train + {len(split.val_idx):,} "
                  f"validation (stratified, split seed {split.seed}); test {len(data.test_y):,}")
    console.print("  classes: " + ", ".join(f"{c} ({n:,})" for c, n in zip(data.classes, counts, strict=True)))
    console.print(f"  train-split mean {[round(m, 4) for m in mean]}  std {[round(s, 4) for s in std]}")


def _folder_summary(root: Path, args) -> None:
    """`data --dataset folder:PATH`: what training would see, and every file it would skip."""
    from rich.table import Table

    from .data.folder import TEST_FRACTION, TEST_SEED, check_usable, inspect_folder

    limits = _folder_limits(args)
    scan, _, about = inspect_folder(root, args.cache_dir, limits, args.image_size or 32)
    if args.json:
        print(json.dumps({"classes": scan.classes, **about}))
    else:
        console.print(f"folder data set {about['root']} ({about['layout']}): {about['images']:,} images in "
                      f"{len(scan.classes)} classes, read in {about['seconds']:.2f} s ({about['decoded_now']:,} "
                      f"decoded now, the rest from the cache)")
        table = Table("class", *(about["counts"] if scan.trees else ["images"]), title="images per class (readable)")
        for c, name in enumerate(scan.classes):
            table.add_row(name, *[f"{counts[c]:,}" for counts in about["counts"].values()])
        console.print(table)
        if "test" not in about["counts"]:
            console.print(f"  test: a stratified {TEST_FRACTION:.0%} of each class is held out (seed {TEST_SEED}); "
                          f"validation: a tenth of the rest (--val-size), or the val/ folder")
        console.print("  stored size (shorter side): " + ", ".join(f"{k}: {v:,}" for k, v in about["sizes"].items()
                                                                  if v))
        for title, items in [("cannot be decoded (skipped)", list(about["unreadable"].items())),
                             ("not images (skipped)", about["skipped"])]:
            if items:
                console.print(f"  {len(items):,} file(s) {title}:")
                for path, why in items[:20]:
                    console.print(f"    {path}: {why}")
                if len(items) > 20:
                    console.print(f"    … {len(items) - 20:,} more (all with --json)")
        if scan.empty:
            console.print(f"  class folders without images: {', '.join(scan.empty)}")
        dup = about["duplicates"]
        if dup["within_a_split"] or dup["across_splits"]:
            console.print(f"  exact duplicate files: {dup['across_splits']:,} across train/val/test, "
                          f"{dup['within_a_split']:,} within one; e.g. "
                          + "; ".join(" = ".join(pair) for pair in dup["examples"]))
    check_usable(scan, about, limits)


def cmd_models(args) -> None:
    from rich.table import Table

    from .models import create_model, forward_flops, list_models, trainable_params

    table = Table("model", "trainable params", "forward MFLOPs / image", title="registered models")
    for name in list_models():
        model = create_model(name)
        table.add_row(name, f"{trainable_params(model):,}", f"{forward_flops(model) / 1e6:,.1f}")
    console.print(table)


def _overrides(args, names: list[str]) -> dict:
    return {n: getattr(args, n, None) for n in names}


TRAIN_FIELDS = ["model", "epochs", "batch_size", "lr", "seed", "device", "precision", "channels_last", "threads",
                "patience", "subset", "val_size", "split_seed", "tensorboard", "image_size"]


def _check_resume_flags(out: Path, overrides: dict) -> None:
    """--resume continues with the run's saved config; a flag asking for something else is an error."""
    from .config import load_run_config

    if not (out / "config.json").is_file():
        return  # train() explains that there is nothing to resume
    saved, _ = load_run_config(out)
    changed = [f"--{k.replace('_', '-')} {v} (run has {getattr(saved, k)})"
               for k, v in overrides.items() if v is not None and getattr(saved, k) != v]
    if changed:
        raise UserError(f"--resume continues {out} with its saved config; these flags differ: {'; '.join(changed)}")


def cmd_train(args) -> None:
    from .config import RunConfig, parse_settings, read_config_file
    from .training.budget import epochs_text, replan_direction
    from .training.distributed import DistOptions, is_rank_zero
    from .training.engine import train

    overrides = {**_overrides(args, TRAIN_FIELDS), "dataset": _dataset(args), **parse_settings(args.set)}
    if args.final:
        overrides["final"] = True
    if args.time_budget is not None:
        overrides["time_budget"] = args.time_budget
    base = None
    if args.config is not None:
        if args.recipe is not None:
            raise UserError("--config already holds a recipe; drop --recipe (or override fields with flags)")
        base = read_config_file(args.config)
    recipe, data, hooks, started, speed = args.recipe or "seed", None, [], None, None
    if args.time_budget is not None and args.recipe is None and base is None and not args.resume:
        recipe, data, hooks, started, speed = _pick_recipe(args, overrides)
    cfg = RunConfig.resolve(recipe, overrides, base=base)
    if args.resume and args.out is not None:
        _check_resume_flags(args.out, overrides)
    dist = DistOptions(args.dist_backend, args.dist_bn, args.dist_timeout)
    run_dir, m = train(cfg, args.out, args.data_dir, args.cache_dir, resume=args.resume, overwrite=args.overwrite,
                       dist=dist, data_limits=_folder_limits(args), data=data, hooks=hooks, started=started,
                       speed=speed)
    if not is_rank_zero():
        return  # under torchrun rank 0 reports (and writes the report)
    console.print(test_line(m))
    if m.get("budget"):
        b = m["budget"]
        console.print(f"time budget {b['minutes']:g} min: planned {epochs_text(b['planned_epochs'])} "
                      f"(~{b['planned_seconds']:.0f} s), ran {b['epochs_run']:g} in {b['wall_seconds']:.0f} s"
                      f"{' (stopped early by the budget)' if b['stopped_by_budget'] else ''}"
                      + "".join(f"; re-planned to {r['epochs']} at epoch {r['after_epoch']:g} ("
                                f"{replan_direction(r)} than measured)"
                                for r in b.get("replanned", [])))
    console.print(f"run folder: {run_dir}")
    if args.report:
        from .evaluation.report import build_report

        console.print(f"report: {build_report(run_dir, data_dir=args.data_dir, cache_dir=args.cache_dir)}")


def _pick_recipe(args, overrides: dict) -> tuple[str, object, list, float, dict]:
    """--time-budget without --recipe: (the recipe picked for this machine, the data set loaded for it, the hook
    that records the choice in the run folder, when the run's clock started: the choice counts against the
    budget, the picked recipe's measured speed: its run plans from it)."""
    import time

    from .data.loading import load_dataset
    from .training.hooks import RecordPick
    from .training.pick import pick_lines, pick_recipe

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--time-budget without --recipe measures every recipe on one process; under torchrun "
                        "name the recipe (--recipe)")
    started = time.perf_counter()
    data = load_dataset(overrides.get("dataset") or "cifar10", args.data_dir, args.cache_dir, _folder_limits(args),
                        overrides.get("image_size") or 32)
    picked = pick_recipe(args.time_budget, overrides, data, started)
    for line in pick_lines(picked):
        console.print(line, markup=False)
    return picked["recipe"], data, [RecordPick(picked)], started, picked["speed"]


def test_line(m: dict) -> str:
    """The finished run in one line: the headline test figure, labelled (TTA or single view), and the other."""
    from .runs import headline

    figure, label = headline(m)
    other = f" ({m['test_accuracy']:.2%} single view)" if m.get("test_accuracy_tta") is not None else ""
    val = f", val accuracy {m['best_val_accuracy']:.2%}" if m.get("best_val_accuracy") is not None else ""
    if m.get("test_balanced_accuracy") is not None:  # imbalanced test classes
        other += f", balanced accuracy {m['test_balanced_accuracy']:.2%} single view"
    return (f"test accuracy {figure:.2%} {label}{other} (best epoch {m['best_epoch']} of {m['epochs']}{val}, "
            f"{m['train_seconds']:.0f} s training, {m.get('wall_seconds', 0):.0f} s in all)")


def _print_metrics(figures: dict, title: str) -> None:
    from rich.table import Table

    classes = list(figures["per_class_accuracy"])
    table = Table("class", "accuracy", title=title)
    for c, a in figures["per_class_accuracy"].items():
        table.add_row(c, f"{a:.1%}")
    console.print(table)
    cm = Table("true \\ predicted", *[c[:5] for c in classes], title="confusion matrix (rows: true class)")
    for c, row in zip(classes, figures["confusion_matrix"], strict=True):
        cm.add_row(c, *[str(v) for v in row])
    console.print(cm)


def cmd_evaluate(args) -> None:
    """The test set with the run's best weights: the single-view figures, or (--tta) the TTA figures, merged
    into metrics.json under their own names (runs.py) so neither ever replaces the other."""
    from .config import load_run_config
    from .data.loading import load_dataset
    from .runs import evaluate_model, load_run_model, read_metrics, write_metrics
    from .runtime import resolve_runtime

    run_dir = args.run_dir
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if args.tta_translate and not args.tta:
        raise UserError("--tta-translate adds shifted views to the flip TTA: add --tta")
    if args.tta_translate < 0:
        raise UserError(f"--tta-translate must be >= 0, got {args.tta_translate}")
    cfg, _ = load_run_config(run_dir)
    rt = resolve_runtime(args.device, cfg.precision, cfg.channels_last, cfg.threads)
    try:
        previous = read_metrics(run_dir) if (run_dir / "metrics.json").is_file() else {}
    except UserError:
        previous = {}  # a damaged metrics.json is replaced
    model, meta, rt = load_run_model(run_dir, rt)
    data = load_dataset(cfg.dataset, args.data_dir, args.cache_dir, image_size=cfg.image_size)
    m = evaluate_model(model, meta, data, rt, args.tta, args.tta_translate)
    if "test_accuracy" not in previous and args.tta:  # a metrics.json always has the single-view figures
        previous.update(evaluate_model(model, meta, data, rt))
    write_metrics(run_dir, {"test_accuracy_tta": None, **previous, **m})
    if args.json:
        print(json.dumps(m))
    elif args.tta:
        t = m["tta"]
        _print_metrics(t, f"test accuracy with TTA ({t['views']} views) {m['test_accuracy_tta']:.2%} on "
                          f"{sum(map(sum, t['confusion_matrix'])):,} images")
    else:
        _print_metrics(m, f"test accuracy (single view) {m['test_accuracy']:.2%} on {m['test_images']:,} images")
    if not args.json:
        console.print(f"written: {run_dir / 'metrics.json'}")


def cmd_report(args) -> None:
    from .evaluation.report import build_report

    if not args.run_dir.is_dir():
        raise UserError(f"run folder not found: {args.run_dir}")
    path = build_report(args.run_dir, args.out, data_dir=args.data_dir, cache_dir=args.cache_dir)
    console.print(f"report: {path}")


def cmd_predict(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from .data.images import expand_paths
    from .predict import predict_files
    from .progress import image_progress

    if args.top_k <= 0:
        raise UserError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if not args.run_dir.is_dir():
        raise UserError(f"run folder not found: {args.run_dir}")
    failed = 0
    table = Table("file", f"top-{args.top_k} classes (probability)")
    items = expand_paths(args.paths)
    with image_progress("predict", len(items)) as advance:
        for p in predict_files(args.run_dir, items, args.top_k, args.tta, args.batch_size, on_image=advance):
            failed += p.error is not None
            if args.json:
                row = {"file": str(p.path), "top_k": [{"class": c, "probability": round(q, 6)} for c, q in p.top_k]}
                if p.error:
                    row = {"file": str(p.path), "error": p.error}
                print(json.dumps(row), flush=True)
            else:
                table.add_row(Text(str(p.path)), Text(f"error: {p.error}", style="red") if p.error
                              else Text("  ".join(f"{c} {q:.1%}" for c, q in p.top_k)))
    if not args.json:
        console.print(table)
    if failed:
        err_console.print(f"{failed} input(s) could not be classified (reasons above)")
        return 1
    return 0


def cmd_compare(args) -> None:
    from rich.table import Table
    from rich.text import Text

    from .evaluation.compare import compare_runs

    r = compare_runs(args.runs)
    if args.json:
        print(json.dumps(r))
        return
    n = len(r["runs"])
    accs = ", ".join(f"{a:.2%}" for a in r["test_accuracy"])
    console.print(f"{n} runs: test accuracy (single view) {r['mean']:.2%} ± {r['std']:.2%} (mean ± std; {accs})")
    if r["tta_mean"] is not None:
        accs = ", ".join(f"{a:.2%}" for a in r["test_accuracy_tta"])
        console.print(f"        with TTA ({r['tta_views']} views) {r['tta_mean']:.2%} ± {r['tta_std']:.2%} ({accs})")
    if r["train_seconds"]:
        mu = sum(r["train_seconds"]) / len(r["train_seconds"])
        console.print(f"training time {mu:.0f} s mean ({', '.join(f'{s:.0f}' for s in r['train_seconds'])}); "
                      f"epochs {r['epochs']}, best epochs {r['best_epochs']}")
    table = Table("rank", "class", "accuracy mean ± std", "min–max", "95% interval (seeds + test images)",
                  title=f"per-class test accuracy ({r['per_class_of']}, {r['per_class'][0]['images']:,} test images "
                        f"per class), best first")
    for i, c in enumerate(r["per_class"], 1):
        lo, hi = c["ci"]
        table.add_row(str(i), c["class"], f"{c['mean']:.1%} ± {c['std']:.1%}", f"{c['min']:.1%}–{c['max']:.1%}",
                      f"{lo:.1%}–{hi:.1%}")
    console.print(table)
    claim = r["class_claim"]
    if claim and claim["pairs"]:  # runs without CIFAR-10's classes cannot test it: nothing to say (--json has it)
        console.print(Text.assemble("the seed's per-class claim (ships and automobiles easiest, cats and dogs "
                                    "hardest): ", (claim["verdict"], "bold"), f" — {claim['figures']}"))


def cmd_export(args) -> None:
    from .config import load_run_config
    from .data.loading import load_dataset
    from .export import export_onnx, verify_onnx

    if not args.run_dir.is_dir():
        raise UserError(f"run folder not found: {args.run_dir}")
    if args.check_images <= 0:
        raise UserError(f"--check-images must be positive, got {args.check_images}")
    path = export_onnx(args.run_dir, args.out, args.opset)
    run_cfg = load_run_config(args.run_dir)[0]
    data = load_dataset(run_cfg.dataset, args.data_dir, args.cache_dir, image_size=run_cfg.image_size)
    check = verify_onnx(path, args.run_dir, data.test_x[: args.check_images])
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): input uint8 N×3×32×32 (RGB 0–255), "
                  f"output probabilities N×{len(data.classes)}, dynamic batch")
    console.print(f"onnxruntime check on {check['images']} test images: same top-1 {check['same_top1']}/"
                  f"{check['images']}, max |Δp| {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:.0e}): "
                  f"{'OK' if check['ok'] else 'FAILED'}")
    if not check["ok"]:
        raise UserError(f"the exported model does not match PyTorch; {path} kept for inspection")


def _serve_access(args):
    from .serving.guard import LOOPBACK_NAMES, Access, is_loopback

    loopback = is_loopback(args.host)
    if not loopback and not args.token and not args.insecure:
        raise UserError(f"--host {args.host} lets other machines call the service: set --token (or "
                        f"$CIFAR10CNN_TOKEN), or pass --insecure to serve without authentication")
    if args.token is not None and len(args.token) < 16:
        raise UserError("--token must be at least 16 characters (e.g. python -c \"import secrets; "
                        "print(secrets.token_urlsafe())\")")
    hosts = [*LOOPBACK_NAMES, *args.allow_host] if loopback or args.allow_host else ["*"]
    return Access(allowed_hosts=hosts, token=args.token or None, cors_origins=args.cors_origin,
                  max_inflight=args.max_inflight)


def cmd_serve(args) -> None:
    try:
        from .serving.app import Limits, create_app
        from .serving.server import run_server
    except ImportError as e:
        raise UserError(f"serving needs the serve extra ({e.name} missing): pip install 'cifar10cnn[serve]'") from None
    for name in ("max_batch", "max_files", "max_queue", "max_inflight", "decode_threads"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not (args.max_upload_mb > 0 and args.max_decode_mb > 0 and args.read_timeout > 0 and args.max_delay_ms >= 0):
        raise UserError("--max-upload-mb, --max-decode-mb and --read-timeout must be positive, --max-delay-ms >= 0")
    if not args.run_dir.is_dir():
        raise UserError(f"run folder not found: {args.run_dir}")
    access = _serve_access(args)
    try:  # one clear line now, rather than uvicorn's log after the model has loaded
        socket.create_server((args.host, args.port)).close()
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    limits = Limits(max_body_bytes=int(args.max_upload_mb * 2**20), max_files=args.max_files,
                    max_queue_images=args.max_queue, max_decode_bytes=int(args.max_decode_mb * 2**20),
                    decode_threads=args.decode_threads)
    app = create_app(args.run_dir, args.max_batch, args.max_delay_ms, limits, args.backend, access)
    page = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    if access.token:
        page += "#token=" + access.token
    console.print(f"serving {args.run_dir} on {args.host}:{args.port}  page: {page}  API docs: /docs"
                  + ("  (no authentication: --insecure)" if args.insecure and not access.token else ""))
    run_server(app, args.host, args.port, read_timeout=args.read_timeout)


def cmd_loadtest(args) -> None:
    from .serving.loadtest import run_loadtest

    images = None
    if args.image is not None:
        if not args.image.is_file():
            raise UserError(f"--image {args.image} not found")
        if args.image.stat().st_size > 8 * 2**20:
            raise UserError(f"--image {args.image} is larger than the server's default upload limit (8 MB)")
        images = [args.image.read_bytes()]
    r = run_loadtest(args.url, args.clients, args.seconds, args.max_requests, images, args.images_per_request,
                     args.token)
    if args.json:
        print(json.dumps(r))
        return
    console.print(
        f"{r['requests']:,} requests ({r['images']:,} images) in {r['seconds']} s from {args.clients} clients: "
        f"{r['requests_per_s']:,.0f} req/s, {r['images_per_s']:,.0f} images/s | latency p50 {r['p50_ms']} ms, "
        f"p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms | errors {r['errors']} {r['statuses']} | "
        f"server memory {r['server_rss_mb_start']} → {r['server_rss_mb_end']} MB "
        f"(samples {r['server_rss_mb_samples']}) | forward passes {r['forward_passes']}"
    )


def cmd_bench(args) -> None:
    from .bench import bench
    from .config import RunConfig, parse_settings
    from .data.loading import load_dataset

    if args.train_images <= 0 or args.eval_images <= 0:
        raise UserError(f"--train-images and --eval-images must be positive, got {args.train_images}, "
                        f"{args.eval_images}")
    fields = ["model", "batch_size", "lr", "seed", "device", "precision", "channels_last", "threads", "image_size"]
    cfg = RunConfig.resolve(args.recipe or "seed", {**_overrides(args, fields), "dataset": _dataset(args),
                                                    **parse_settings(args.set)})
    data = load_dataset(cfg.dataset, args.data_dir, args.cache_dir, _folder_limits(args), cfg.image_size)
    r = bench(data, cfg, train_images=args.train_images, eval_images=args.eval_images,
              warmup_images=min(1_000, args.train_images), flops=args.flops)
    if args.json:
        print(json.dumps(r))
    else:
        console.print(
            f"{r['model']} batch {r['batch_size']}: train {r['train_images_per_s']:,.0f} img/s, "
            f"eval {r['eval_images_per_s']:,.0f} img/s | {r['device']} ({r['device_name']}) {r['precision']} "
            f"{'channels_last ' if r['channels_last'] else ''}{r['threads']} threads, torch {r['torch']}"
        )
        if args.flops:
            peak = r["attainable_gflops_per_s"]
            console.print(
                f"  {r['train_gflops_per_image']:.3f} GFLOP per training image, {r['eval_gflops_per_image']:.3f} per "
                f"eval image → train {r['train_gflops_per_s']:,.1f} GFLOP/s ({r['train_fraction_of_peak']:.0%}), "
                f"eval {r['eval_gflops_per_s']:,.1f} GFLOP/s ({r['eval_fraction_of_peak']:.0%}) of the attainable "
                f"{peak['peak']:,.1f} {peak['dtype']} GFLOP/s (matmul {peak['matmul']:,.1f}, conv {peak['conv']:,.1f})")


RUNTIME_FIELDS = ["device", "precision", "channels_last", "threads", "tensorboard"]  # + how runs are watched


def cmd_ablate(args) -> None:
    from .experiments.ablate import VARIANTS, AblationSettings, run_ablation

    if args.list:
        for name, v in VARIANTS.items():
            console.print(f"{name:22s} {v['about']}  (seed model options {v['options'] or 'none'})")
        return
    _only_32(args, "ablate")
    defaults = AblationSettings()
    settings = AblationSettings(variants=args.variants or defaults.variants, seeds=args.seeds,
                                lrs=args.lrs or defaults.lrs, lr_variants=args.lr_variants or defaults.lr_variants,
                                subset=args.subset or None, epochs=args.epochs,
                                val_size=args.val_size, train_eval_images=args.train_eval_images,
                                dataset=_dataset(args) or "cifar10")
    run_ablation(args.out, settings, runtime=_overrides(args, RUNTIME_FIELDS), data_dir=args.data_dir,
                 cache_dir=args.cache_dir, train_runs=not args.analyze_only, data_limits=_folder_limits(args))
    console.print(f"claims: {args.out / 'claims.md'} and {args.out / 'claims.html'}")


def cmd_tune(args) -> None:
    from .experiments.tune import TuneSettings, run_tuning, summary_markdown

    _only_32(args, "tune")
    study = args.study or f"{args.model}-tune"
    out = args.out or Path("runs/tune") / study
    settings = TuneSettings(model=args.model, recipe=args.recipe, epochs=args.epochs, subset=args.subset,
                            val_size=args.val_size, time_budget=args.time_budget, patience=args.patience,
                            seed=args.seed, dataset=_dataset(args) or "cifar10")
    summary = run_tuning(out, settings, args.trials, study, args.storage, runtime=_overrides(args, RUNTIME_FIELDS),
                         data_dir=args.data_dir, cache_dir=args.cache_dir, sampler_seed=args.sampler_seed,
                         final=args.final, data_limits=_folder_limits(args))
    console.print(summary_markdown(summary), markup=False)
    console.print(f"written: {out / 'summary.md'}, {out / 'trials.csv'}, {out / 'lr_batch.png'}")


COMMANDS = {"data": cmd_data, "models": cmd_models, "train": cmd_train, "evaluate": cmd_evaluate,
            "report": cmd_report, "predict": cmd_predict, "compare": cmd_compare, "export": cmd_export,
            "serve": cmd_serve, "loadtest": cmd_loadtest, "bench": cmd_bench, "ablate": cmd_ablate, "tune": cmd_tune}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (already reported in one line)
        return int(e.code or 0)
    try:
        if args.command != "train" and os.environ.get("WORLD_SIZE", "1") != "1":
            raise UserError(f"only `train` runs under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}); run "
                            f"`cifar10cnn {args.command}` as a plain command")
        status = COMMANDS[args.command](args)
    except UserError as e:
        err_console.print(f"error: {e}", markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; a run can be continued with `cifar10cnn train --resume --out RUN_DIR`")
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
