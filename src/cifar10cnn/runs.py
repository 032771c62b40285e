"""The run folder: what a run writes, and how every command reads it back.

    runs/<name>/
      config.json                   every resolved setting + runtime, data split, normalisation, code commit
      history.csv                   one row per epoch (HISTORY_FIELDS)
      model.safetensors             best weights so far (by the monitored validation metric)
      checkpoint/last.safetensors   resumable state, written atomically at the end of every epoch
      metrics.json                  the test evaluation of the finished run (schema below)

metrics.json, schema 2 — one meaning per name:
    test_accuracy, test_loss, per_class_accuracy, confusion_matrix, test_images
                          the single-view evaluation (each test image once, as `predict` and `serve` see it)
    test_accuracy_tta     the test-time-augmentation figure, or null when TTA was not evaluated; its details
                          under "tta": {"views", "translate", "test_loss", "per_class_accuracy", "confusion_matrix",
                          "eval_seconds"}
    eval_seconds          the single-view test pass alone (the TTA pass has its own, tta.eval_seconds)
    epochs, best_epoch, best_val_accuracy, train_seconds, wall_seconds, stopped_early, budget   the training
`read_metrics` upgrades files written before schema 2 (where `test_accuracy` was the TTA figure of a TTA
recipe) to this schema, so every reader sees one meaning.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .config import RunConfig, load_run_config
from .data.dataset import ImageDataset
from .errors import UserError
from .evaluation.metrics import classification_metrics
from .fileio import atomic_write_json, file_lock, read_json
from .inference import evaluate, predict_logits, tta_views
from .models import build_classifier, trainable_params
from .progress import image_progress
from .provenance import code_version
from .runtime import Runtime, resolve_runtime
from .weights import load_into, read_weights

RUN_FILES = ["config.json", "history.csv", "model.safetensors", "metrics.json", "checkpoint", "report.html",
             "model.onnx", "tensorboard", "diverged.json", "recipe_pick.json"]
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "images_per_s", "train_eval_loss", "train_eval_accuracy"]
METRICS_SCHEMA = 2


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-seed{cfg.seed}-{stamp}"


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoint" / "last.safetensors"


def staging_dir(out: Path) -> Path:
    """Where `train --overwrite` builds the new run until its first checkpoint (then it replaces `out`)."""
    return out.parent / f".{out.name}.new"


def lock_path(out: Path) -> Path:
    """The lock held by the process training `out` (beside it: it survives the folder being replaced)."""
    return out.parent / f".{out.name}.lock"


def run_lock(out: Path, wait: bool = False):
    """One process trains a run folder at a time: a second one is refused in one line (or waits)."""
    busy = None if wait else (f"another process (pid {{pid}}) is training {out}; wait for it to finish or "
                              f"choose another --out")
    return file_lock(lock_path(out), busy)


def run_folder_problem(out: Path) -> str | None:
    """Why `out` is not a folder a cifar10cnn run wrote, or None when it is one (and only one)."""
    try:
        doc = read_json(out / "config.json", "run config")
    except UserError as e:
        return str(e)
    if not isinstance(doc.get("config"), dict) or "cifar10cnn" not in doc:
        return "its config.json was not written by cifar10cnn"
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in RUN_FILES and not (p.name.startswith("report_") and p.suffix == ".png"))
    if foreign:
        return f"it also holds {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}"
    return None


def prepare_run_dir(out: Path, resume: bool | str, overwrite: bool) -> str:
    """Decide what to do with `out`: 'new', 'overwrite', 'resume' or 'finished'. Refuses to clobber results.

    resume="auto": whatever `out` holds (new, unfinished → resume, finished) — for callers that share a
    folder between processes, deciding only once they hold its lock."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if resume == "auto":
        resume = (out / "config.json").is_file()
    if not out.exists():
        if resume:
            raise UserError(f"nothing to resume: {out} does not exist")
        return "new"
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    has_config = (out / "config.json").is_file()
    finished = (out / "metrics.json").is_file()
    if resume:
        if not has_config:
            raise UserError(f"nothing to resume: {out} has no config.json")
        return "finished" if finished else "resume"
    if overwrite:
        problem = run_folder_problem(out) if any(out.iterdir()) else None
        if problem:
            raise UserError(f"--out {out} is not a cifar10cnn run folder ({problem}); refusing to overwrite it")
        return "overwrite"
    if finished:
        raise UserError(f"{out} already holds a finished run; use --overwrite to replace it or choose another --out")
    if has_config:
        raise UserError(f"{out} holds an unfinished run; use --resume to continue it or --overwrite to start again")
    if any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and not a run folder; choose another --out")
    return "new"


def replace_run(target: Path, new: Path) -> None:
    """Move the finished-enough run `new` onto `target`, whose old run goes only after the move."""
    aside = target.parent / f".{target.name}.old"
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def write_config(out: Path, cfg: RunConfig, runtime: Runtime, data: dict, trainable: int,
                 distributed: dict | None = None) -> None:
    """config.json: the resolved config, the runtime, the data (`data`: split and normalisation), the process
    group it started with (`distributed`: world size, backend, BatchNorm mode, torchrun job) and the code that
    made the run (git commit, and whether the checkout had uncommitted changes)."""
    code = code_version()
    atomic_write_json(out / "config.json", {
        "config": cfg.to_dict(), "runtime": runtime.describe(), "data": data, "trainable_params": trainable,
        "distributed": distributed or {"world_size": 1},
        "cifar10cnn": code["version"], "code": code,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })


def upgrade_metrics(m: dict) -> dict:
    """metrics.json written before schema 2 → schema 2 (see the module docstring)."""
    if m.get("metrics_schema", 1) >= METRICS_SCHEMA or "test_accuracy" not in m:
        return m
    m = dict(m)
    old_eval = m.pop("tta") if isinstance(m.get("tta"), dict) else None  # `evaluate --tta` put its figures here
    if "test_accuracy_no_tta" in m or old_eval is not None:
        # a TTA recipe's headline figures were the TTA evaluation's; else those of `evaluate --tta`
        src = m if "test_accuracy_no_tta" in m else old_eval
        translate = src.get("tta_translate", 0)
        m["tta"] = {"views": tta_views(translate), "translate": translate,
                    **{k: src[k] for k in ("test_loss", "per_class_accuracy", "confusion_matrix") if k in src}}
        m["test_accuracy_tta"] = src.get("test_accuracy")
        if src is m:
            m["test_accuracy"] = m.pop("test_accuracy_no_tta")
            for k in ("tta_translate", "test_loss", "per_class_accuracy", "confusion_matrix"):
                m.pop(k, None)
    else:
        m["test_accuracy_tta"] = None
        m.pop("tta", None)
        m.pop("tta_translate", None)
    m["metrics_schema"] = METRICS_SCHEMA
    return m


def read_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json, in schema 2."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.json (not a finished run)")
    return upgrade_metrics(read_json(path, "metrics file (metrics.json)"))


def write_metrics(run_dir: Path, metrics: dict) -> dict:
    """Write metrics.json (schema 2); return what was written."""
    metrics = {"metrics_schema": METRICS_SCHEMA, **metrics}
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def image_size(meta: dict) -> int:
    """The side of the images a run's model was trained on (weights metadata; 32 unless --image-size)."""
    return int(meta.get("image_size", 32))


def load_run_model(run_dir: Path, runtime: Runtime | None = None):
    """(classifier with the run's best weights, weights metadata, runtime) for evaluation/prediction."""
    run_dir = Path(run_dir)
    cfg, _ = load_run_config(run_dir)
    state, meta = read_weights(run_dir / "model.safetensors")
    if meta.get("model") not in (None, cfg.model):
        raise UserError(f"{run_dir / 'model.safetensors'} holds a {meta.get('model')!r} model, "
                        f"its config.json says {cfg.model!r}")
    runtime = runtime or resolve_runtime("auto", cfg.precision, cfg.channels_last, cfg.threads)
    classes = meta.get("classes") or []
    options = {k: v for k, v in cfg.model_options.items() if k != "pretrained"}  # the run's weights replace them
    model = build_classifier(cfg.model, meta.get("mean", [0.0] * 3), meta.get("std", [1.0] * 3),
                             len(classes) or 10, **options)
    load_into(model, state, run_dir / "model.safetensors")
    model = runtime.place(model)
    return model.eval(), meta, runtime


def evaluate_model(model, meta: dict, data: ImageDataset, runtime: Runtime, tta: bool = False, translate: int = 0,
                   predict: Callable = predict_logits) -> dict:
    """Evaluate a run's best weights (`load_run_model`) on the test set, in the metrics.json schema: the
    single-view figures (tta=False), or `test_accuracy_tta` and its "tta" block (tta=True). Nothing is written."""
    if meta.get("classes") and meta["classes"] != data.classes:
        raise UserError(f"the run was trained on classes {meta['classes']}, the data has {data.classes}")
    t0 = time.perf_counter()
    with image_progress("test with TTA" if tta else "test", len(data.test_y)) as advance:
        ev = evaluate(model, data.test_x, data.test_y, runtime, on_batch=advance, tta=tta, translate=translate,
                      predict=predict)
    m = classification_metrics(ev["logits"], data.test_y, data.classes)
    if not math.isfinite(m["test_loss"]):
        m["test_loss"] = None
    seconds = round(time.perf_counter() - t0, 3)
    if tta:
        details = {k: m[k] for k in ("test_loss", "per_class_accuracy", "confusion_matrix") if k in m}
        if "test_balanced_accuracy" in m:
            details["balanced_accuracy"] = m["test_balanced_accuracy"]
        return {"test_accuracy_tta": m["test_accuracy"],
                "tta": {"views": tta_views(translate), "translate": translate, **details, "eval_seconds": seconds}}
    return {**m, "eval_seconds": seconds, "model": meta.get("model"), "trainable_params": trainable_params(model)}


def test_figures(run_dir: Path, data: ImageDataset, runtime: Runtime, cfg: RunConfig,
                 predict: Callable = predict_logits) -> dict:
    """The finished run's one test evaluation: single view, plus the recipe's TTA when it has one."""
    model, meta, runtime = load_run_model(run_dir, runtime)
    single = evaluate_model(model, meta, data, runtime, predict=predict)
    if not cfg.tta:
        return {**single, "test_accuracy_tta": None}
    return {**single, **evaluate_model(model, meta, data, runtime, True, cfg.tta_translate, predict)}


def headline(m: dict) -> tuple[float, str]:
    """(the figure `train` prints first, its label): the TTA figure when the run was evaluated with TTA."""
    if m.get("test_accuracy_tta") is not None:
        views = m.get("tta", {}).get("views", 2)
        return m["test_accuracy_tta"], f"with {'multi-crop' if views > 2 else 'flip'} TTA ({views} views)"
    return m["test_accuracy"], "single view"
