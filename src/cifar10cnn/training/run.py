"""A training run from config to run folder: the top-to-bottom story of `cifar10cnn train`.

    runs/<name>/
      config.json          every resolved setting + runtime, data split and normalisation
      history.csv          one row per epoch
      model.safetensors    best weights so far (by the monitored validation metric)
      checkpoint/last.safetensors   resumable state, written atomically at the end of every epoch
      metrics.json         the single test evaluation of the finished run

Honesty: early stopping and the best epoch use the validation split only; the test set is
evaluated once, after training, with the best weights.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import __version__
from ..config import RunConfig, load_run_config
from ..data.augment import Augment
from ..data.cifar10 import CIFAR10, channel_stats, default_cache_dir, load_cifar10, make_split
from ..errors import TrainingDiverged, UserError
from ..evaluation.metrics import classification_metrics
from ..fileio import atomic_write_json, atomic_write_text, csv_text
from ..models import build_classifier, input_normalization, trainable_params
from ..progress import Stopwatch, console, image_progress
from .budget import plan_budget
from .checkpoint import load_checkpoint, load_into, read_weights, save_checkpoint, save_weights
from .ema import Lookahead, ModelEMA
from .features import features_for, head_layer
from .loop import evaluate, train_one_epoch
from .runtime import Runtime, resolve_runtime
from .schedule import lr_factor

RUN_FILES = ["config.json", "history.csv", "model.safetensors", "metrics.json", "checkpoint", "report.html",
             "model.onnx"]
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "images_per_s", "train_eval_loss", "train_eval_accuracy"]


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-seed{cfg.seed}-{stamp}"


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> str:
    """Decide what to do with `out`: 'new', 'overwrite', 'resume' or 'finished'. Refuses to clobber results."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
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
        if any(out.iterdir()) and not has_config:
            raise UserError(f"--out {out} is not a cifar10cnn run folder; refusing to overwrite it")
        return "overwrite"
    if finished:
        raise UserError(f"{out} already holds a finished run; use --overwrite to replace it or choose another --out")
    if has_config:
        raise UserError(f"{out} holds an unfinished run; use --resume to continue it or --overwrite to start again")
    if any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and not a run folder; choose another --out")
    return "new"


def make_optimizer(cfg: RunConfig, model: torch.nn.Module, runtime: Runtime) -> torch.optim.Optimizer:
    """Parameter groups by (weight decay, lr scale, last epoch):
    - no weight decay on BatchNorm weights and biases (the 1-D parameters) unless `decay_bn_bias`;
    - the backbone (everything but the head) at `backbone_lr_scale` × the learning rate;
    - BatchNorm parameters at `norm_lr_scale` × the learning rate, their weight-decay coefficient divided by
      the same factor, so the decay per step (lr × coefficient with PyTorch's coupled decay) is unchanged;
    - a whitening stem's bias trained for `whiten_bias_epochs` only (the group's "until_epoch")."""
    head = {id(p) for p in head_layer(model).parameters()} if cfg.backbone_lr_scale != 1 else set()
    norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
            for p in m.parameters()}
    grouped: dict[tuple[float, float, int], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = cfg.decay_bn_bias or cfg.weight_decay == 0 or p.ndim > 1
            scale = cfg.backbone_lr_scale if head and id(p) not in head else 1.0
            norm_scale = cfg.norm_lr_scale if id(p) in norm else 1.0
            until = cfg.whiten_bias_epochs if name.endswith("whiten.bias") else 0
            grouped.setdefault((cfg.weight_decay / norm_scale if decay else 0.0, scale * norm_scale, until),
                               []).append(p)
    groups = [{"params": params, "lr": cfg.lr * scale, "lr_scale": scale, "weight_decay": wd,
               **({"until_epoch": until} if until else {})}
              for (wd, scale, until), params in grouped.items()]
    # fused kernels: one update for all tensors (measured +4% img/s on the seed model at batch 32)
    fused = {"fused": True} if runtime.device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.adam_eps, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps, **fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def schedule_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the schedule set, before each group's "lr_scale" (BN parameters ×64, a backbone ×0.1,
    a frozen whitening bias ×0): what the history's lr column shows."""
    for group in optimizer.param_groups:
        if group.get("lr_scale", 1.0):
            return group["lr"] / group.get("lr_scale", 1.0)
    return 0.0


def freeze_finished_groups(optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Groups whose "until_epoch" has passed stop training (lr 0: no step, no weight decay)."""
    for group in optimizer.param_groups:
        if group.get("until_epoch") and epoch > group["until_epoch"]:
            group["lr_scale"] = group["lr"] = 0.0


def _is_better(cfg: RunConfig, value: float | None, best: float | None) -> bool:
    if value is None or best is None:  # --final has no validation: the latest epoch is kept
        return True
    return value < best if cfg.monitor == "val_loss" else value > best


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch): resume needs no saved RNG state."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63)


def train(cfg: RunConfig, out: Path | None = None, data_dir=None, cache_dir=None,
          resume: bool = False, overwrite: bool = False, data: CIFAR10 | None = None,
          on_epoch: Callable[[dict], None] | None = None, test: bool = True) -> tuple[Path, dict]:
    """Train `cfg` into run folder `out` (resuming it if asked); return (run folder, metrics).

    on_epoch(history_row) is called after every epoch (e.g. a tuning pruner; it may raise to stop the
    run, which stays resumable). test=False leaves the test set alone (tuning trials select on the
    validation split only): metrics.json then holds the validation figures and "test_evaluated": false.
    """
    clock = Stopwatch()
    out = Path(out) if out else default_run_dir(cfg)
    mode = prepare_run_dir(out, resume, overwrite)
    if mode in ("resume", "finished"):
        cfg, _ = load_run_config(out)
    if mode == "finished":
        console.print(f"{out} is already finished; nothing to resume")
        return out, json.loads((out / "metrics.json").read_text())

    data = data or load_cifar10(data_dir, cache_dir)
    runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    split = make_split(data.train_y, cfg.val_size, cfg.split_seed, cfg.subset)
    mean, std = channel_stats(data.train_x[split.train_idx])

    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, mean, std, len(data.classes), **cfg.model_options)
    if cfg.init_from:  # e.g. fine-tuning that starts from a linear probe's head (LP-FT)
        init_path = Path(cfg.init_from) / "model.safetensors"
        load_into(model, read_weights(init_path)[0], init_path)
    elif hasattr(model.net, "init_from_data"):  # e.g. a whitening stem computed from the training images
        model.net.init_from_data(model.normalize(data.train_x[data_init_sample(split.train_idx, cfg.seed)]
                                                 .permute(0, 3, 1, 2)))
    if cfg.whiten_bias_epochs and not any(n.endswith("whiten.bias") for n, _ in model.named_parameters()):
        raise UserError(f"whiten_bias_epochs is for models with a whitening stem (fast); {cfg.model} has none")
    model = runtime.place(model)
    mean, std = input_normalization(model.net, mean, std)  # a pretrained network brings its own scaling
    # what the optimizer fits and what the loop feeds it: the whole network on uint8 images, or (linear
    # probe) only the head, on features of the frozen backbone computed once and cached
    fit, train_inputs, features_s = model, data.train_x, None
    if cfg.linear_probe:
        t_features = time.perf_counter()
        model.requires_grad_(False)
        fit = head_layer(model).requires_grad_(True)
        train_inputs = features_for(model, data.train_x, torch.cat([split.train_idx, split.val_idx]), runtime,
                                    Path(cache_dir or default_cache_dir()), cfg.model, cfg.model_options)
        features_s = round(time.perf_counter() - t_features, 2)
    optimizer = make_optimizer(cfg, fit, runtime)
    step_model = torch.compile(fit) if cfg.compile else fit  # the same parameters; only the training step compiles
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    lookahead = Lookahead(fit, cfg.lookahead_every) if cfg.lookahead_every > 0 else None
    eval_model = ema.module if ema is not None else fit
    saved_model = ema.module if ema is not None else model
    augment = Augment(cfg.crop_padding, cfg.pad_mode, cfg.flip, cfg.cutout, seed=cfg.seed)
    augment = augment if augment.active else None
    n_params = trainable_params(model)
    weights_meta = {"model": cfg.model, "model_options": cfg.model_options, "classes": data.classes,
                    "mean": mean, "std": std}

    # the whole data set stays resident on the device as uint8 (or as cached features)
    train_x, train_y = train_inputs.to(runtime.device), data.train_y.to(runtime.device)
    val_x, val_y = train_x[split.val_idx.to(runtime.device)], train_y[split.val_idx.to(runtime.device)]
    train_idx = split.train_idx.to(runtime.device)
    # a fixed sample of the training split evaluated like the validation split (eval mode): the honest gap
    g_sample = torch.Generator(device="cpu").manual_seed(cfg.split_seed)
    sample = split.train_idx[torch.randperm(len(split.train_idx), generator=g_sample)[:cfg.train_eval_images]]
    sample_x, sample_y = train_x[sample.to(runtime.device)], train_y[sample.to(runtime.device)]
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)

    loop = {"epoch": 0, "best": None, "best_epoch": 0, "best_val_accuracy": None, "wait": 0,
            "history": [], "train_seconds": 0.0, "stopped_early": False, "planned_epochs": cfg.epochs,
            "budget": None}
    extra = {**({"ema": ema.module} if ema is not None else {}),
             **({"lookahead": lookahead.module} if lookahead is not None else {})} or None
    ckpt_path = out / "checkpoint" / "last.safetensors"
    if mode == "resume" and ckpt_path.is_file():
        loop = load_checkpoint(ckpt_path, model, optimizer, extra)
        if lookahead is not None:
            lookahead.started = loop.get("lookahead_started", False)
        console.print(f"resuming {out} after epoch {loop['epoch']}")
    else:
        if cfg.time_budget is not None:
            probe = copy.deepcopy(fit)  # speed is measured on a copy: the run starts untouched
            loop["budget"] = plan_budget(cfg, torch.compile(probe) if cfg.compile else probe,
                                         make_optimizer(cfg, probe, runtime), runtime, train_x, train_y,
                                         train_idx, len(val_y) + len(sample_y), len(data.test_y) if test else 0,
                                         augment, spent_s=clock())
            del probe
            loop["planned_epochs"] = loop["budget"]["planned_epochs"]
            console.print(
                f"time budget {cfg.time_budget:g} min: measured {loop['budget']['train_images_per_s']:,.0f} "
                f"train img/s → {loop['planned_epochs']} epochs planned (schedule scaled to them)")
        if mode == "overwrite":  # only now that data, model and runtime are known to be good
            for p in [*(out / name for name in RUN_FILES), *out.glob("report_*.png")]:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {
            "config": cfg.to_dict(),
            "runtime": runtime.describe(),
            "data": {"source": data.source, "classes": data.classes, "split_seed": split.seed,
                     "train_images": len(split.train_idx), "val_images": len(split.val_idx),
                     "test_images": len(data.test_y), "normalization": {"mean": mean, "std": std}},
            "trainable_params": n_params,
            "cifar10cnn": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    sched = schedule_steps(cfg, loop["planned_epochs"], steps_per_epoch)  # re-laid if a budget re-plans
    lr_at = None
    if cfg.schedule != "constant" or sched["warmup"] > 0:
        def lr_at(step: int) -> float:
            return cfg.lr * lr_factor(cfg.schedule, step, sched["total"], sched["warmup"], cfg.lr_start_factor,
                                      cfg.lr_end_factor)

    console.print(
        f"training {cfg.model} ({n_params:,} params) on {len(split.train_idx):,} images, "
        + (f"validating on {len(split.val_idx):,}" if len(val_y) else "no validation split (--final)")
        + f" | {runtime.device} {runtime.precision} {'channels_last ' if runtime.channels_last else ''}"
        f"{runtime.threads} threads | run: {out}"
    )

    while loop["epoch"] < loop["planned_epochs"] and not loop["stopped_early"]:
        epoch, epochs = loop["epoch"] + 1, loop["planned_epochs"]
        if loop["budget"] and epoch > 1 and _over_budget(loop, cfg, clock):
            loop["budget"]["stopped_by_budget"] = True
            console.print(f"stopping before epoch {epoch}: the next epoch would exceed the time budget")
            break
        t0 = time.perf_counter()
        g = torch.Generator(device="cpu").manual_seed(_epoch_seed(cfg.seed, epoch, 0))
        order = train_idx[torch.randperm(len(train_idx), generator=g).to(runtime.device)]
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, 1))  # dropout
        g_aug = torch.Generator(device="cpu").manual_seed(_epoch_seed(cfg.seed, epoch, 2))
        freeze_finished_groups(optimizer, epoch)
        after_step = None
        if lookahead is not None and epoch >= cfg.lookahead_from_epoch:
            def after_step(step: int) -> None:
                lookahead.step(fit, step, sched["total"])
        try:
            with image_progress(f"epoch {epoch}/{epochs}", len(order)) as advance:
                tr = train_one_epoch(step_model, optimizer, train_x, train_y, order, runtime, cfg.batch_size,
                                     scaler, on_batch=advance, augment=augment, epoch=epoch, generator=g_aug,
                                     lr_at=lr_at, start_step=(epoch - 1) * steps_per_epoch,
                                     label_smoothing=cfg.label_smoothing, ema=ema, after_step=after_step)
        except TrainingDiverged as e:
            kept = (f"last good checkpoint: epoch {loop['epoch']} in {ckpt_path}" if loop["epoch"]
                    else "no epoch finished")
            raise TrainingDiverged(f"training diverged in epoch {epoch}: {e}; {kept}") from None
        if lookahead is not None and lookahead.started:
            lookahead.pull(fit, 1.0)  # every epoch ends on the averaged weights
            loop["lookahead_started"] = True
        train_time = time.perf_counter() - t0
        va = evaluate(eval_model, val_x, val_y, runtime, cfg.eval_batch_size) if len(val_y) else None
        te = evaluate(eval_model, sample_x, sample_y, runtime, cfg.eval_batch_size) if len(sample_y) else None
        seconds = time.perf_counter() - t0
        monitored = None if va is None else va["loss"] if cfg.monitor == "val_loss" else va["accuracy"]
        row = {"epoch": epoch, "train_loss": round(tr["loss"], 6), "train_accuracy": round(tr["accuracy"], 6),
               "val_loss": round(va["loss"], 6) if va else "", "val_accuracy": round(va["accuracy"], 6) if va else "",
               "lr": schedule_lr(optimizer), "seconds": round(seconds, 3),
               "images_per_s": round(len(order) / train_time, 1),
               "train_eval_loss": round(te["loss"], 6) if te else "",
               "train_eval_accuracy": round(te["accuracy"], 6) if te else ""}
        loop["history"].append(row)
        loop["epoch"] = epoch
        loop["train_seconds"] += seconds
        improved = _is_better(cfg, monitored, loop["best"])
        if improved:
            loop.update(best=monitored, best_epoch=epoch, best_val_accuracy=va["accuracy"] if va else None, wait=0)
            save_weights(out / "model.safetensors", saved_model, {**weights_meta, "epoch": epoch})
        else:
            loop["wait"] += 1
            loop["stopped_early"] = cfg.patience > 0 and loop["wait"] >= cfg.patience
        atomic_write_text(out / "history.csv", csv_text(loop["history"], HISTORY_FIELDS))
        save_checkpoint(ckpt_path, model, optimizer, loop, extra)
        val_text = f"val loss {va['loss']:.4f} acc {va['accuracy']:.2%}" if va else "no validation"
        if te:  # the honest gap: training images evaluated like the validation images
            val_text += f"  train (eval mode) acc {te['accuracy']:.2%}"
        console.print(
            f"epoch {epoch:3d}/{epochs}  train loss {tr['loss']:.4f} acc {tr['accuracy']:.2%}  {val_text}  "
            f"{row['images_per_s']:,.0f} img/s  {seconds:.1f}s{'  *best' if improved and va else ''}"
        )
        if loop["budget"]:
            _replan(loop, cfg, clock, sched, steps_per_epoch)
        if on_epoch is not None:
            on_epoch(row)
    if loop["stopped_early"]:
        console.print(f"early stopping: no {cfg.monitor} improvement for {cfg.patience} epochs; "
                      f"restoring epoch {loop['best_epoch']}")
    if test:
        metrics = evaluate_run(out, data=data, runtime=runtime, tta=cfg.tta, translate=cfg.tta_translate)
        if cfg.tta:
            metrics["test_accuracy_no_tta"] = evaluate_run(out, data=data, runtime=runtime)["test_accuracy"]
    else:
        metrics = {"test_evaluated": False, "model": cfg.model, "trainable_params": n_params}
    metrics.update(
        epochs=loop["epoch"], best_epoch=loop["best_epoch"], best_val_accuracy=loop["best_val_accuracy"],
        train_seconds=round(loop["train_seconds"], 2), stopped_early=loop["stopped_early"],
        wall_seconds=round(clock(), 2),
    )
    if features_s is not None:
        metrics["features_seconds"] = features_s  # the frozen backbone's pass (or cache read) before training
    if loop["budget"]:
        metrics["budget"] = {**loop["budget"], "epochs_run": loop["epoch"], "wall_seconds": round(clock(), 2)}
    atomic_write_json(out / "metrics.json", metrics)
    return out, metrics


def data_init_sample(train_idx: torch.Tensor, seed: int, n: int = 5_000) -> torch.Tensor:
    """The training images a data-dependent initialisation (a whitening stem) is computed from."""
    g = torch.Generator().manual_seed(seed)
    return train_idx[torch.randperm(len(train_idx), generator=g)[:n]]


def schedule_steps(cfg: RunConfig, epochs: int, steps_per_epoch: int) -> dict:
    total = epochs * steps_per_epoch
    warmup = round(cfg.warmup_fraction * total) if cfg.warmup_fraction else round(cfg.warmup_epochs * steps_per_epoch)
    return {"total": total, "warmup": warmup}


def _epoch_seconds(loop: dict) -> float:
    """What the next epoch will cost: the slowest of the last two (the first may include warm-up)."""
    return max(row["seconds"] for row in loop["history"][-2:])


def _over_budget(loop: dict, cfg: RunConfig, clock: Stopwatch) -> bool:
    """Would one more epoch pass the budget, final evaluation included?"""
    return clock() + _epoch_seconds(loop) + loop["budget"]["final_eval_s"] > cfg.time_budget * 60


def _replan(loop: dict, cfg: RunConfig, clock: Stopwatch, sched: dict, steps_per_epoch: int) -> None:
    """After an epoch: if the planned epochs no longer fit (the machine runs slower than measured at the
    start), plan fewer and lay the schedule over them, so the learning rate still anneals by the end."""
    left = cfg.time_budget * 60 - clock() - loop["budget"]["final_eval_s"]
    fits = loop["epoch"] + max(0, math.floor(left / _epoch_seconds(loop)))
    if fits >= loop["planned_epochs"]:
        return
    loop["budget"].setdefault("replanned", []).append({"after_epoch": loop["epoch"], "epochs": fits})
    loop["planned_epochs"] = fits
    if fits > loop["epoch"]:
        sched.update(schedule_steps(cfg, fits, steps_per_epoch))
        # the warm-up already happened; keep it from starting again if the new total makes it longer
        sched["warmup"] = min(sched["warmup"], loop["epoch"] * steps_per_epoch)
    console.print(f"time budget: this machine runs slower than measured — {fits} epochs now fit; "
                  "the schedule is re-laid to end there")


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


def evaluate_run(run_dir: Path, data: CIFAR10 | None = None, data_dir=None, cache_dir=None,
                 runtime: Runtime | None = None, tta: bool = False, translate: int = 0) -> dict:
    """Evaluate a run's best weights on the test set once; return the metrics (not yet written)."""
    model, meta, runtime = load_run_model(run_dir, runtime)
    data = data or load_cifar10(data_dir, cache_dir)
    if meta.get("classes") and meta["classes"] != data.classes:
        raise UserError(f"the run was trained on classes {meta['classes']}, the data has {data.classes}")
    t0 = time.perf_counter()
    with image_progress("test", len(data.test_y)) as advance:
        ev = evaluate(model, data.test_x, data.test_y, runtime, on_batch=advance, tta=tta, translate=translate)
    metrics = classification_metrics(ev["logits"], data.test_y, data.classes)
    metrics["trainable_params"] = trainable_params(model)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 3)
    metrics["model"] = meta.get("model")
    metrics["tta"] = tta
    if tta and translate:
        metrics["tta_translate"] = translate
    if not math.isfinite(metrics["test_loss"]):
        metrics["test_loss"] = None
    return metrics
