"""`cifar10cnn train` top to bottom: prepare the run folder → build the parts → (plan a time budget) →
for each epoch: one epoch step, evaluate, record, hooks (history, console, checkpoint...) → finish
(best weights, test once, metrics.json).

Honesty: early stopping and the best epoch use the validation split only; the test set is evaluated
once, after training, with the best weights. The run folder's layout is in runs.py.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.distributed import DistError

from ..config import RunConfig, load_run_config
from ..data.dataset import ImageDataset, Split, make_split
from ..data.folder import FolderLimits, folder_summary
from ..data.loading import load_dataset
from ..errors import TrainingDiverged, UserError
from ..inference import evaluate, predict_logits
from ..models import trainable_params
from ..progress import Stopwatch, console, image_progress
from ..runs import (
    checkpoint_path,
    default_run_dir,
    prepare_run_dir,
    read_metrics,
    run_lock,
    staging_dir,
    test_figures,
    write_config,
    write_metrics,
)
from ..runtime import resolve_runtime
from ..weights import save_weights
from .budget import (
    check_points,
    epoch_ends,
    epochs_of,
    epochs_text,
    final_eval_at_run_pace,
    lay_plan,
    plan_budget,
    replan,
    replan_line,
)
from .checkpoint import load_checkpoint
from .distributed import Dist, DistOptions, check_batch, group_failure, local_order, lost_group
from .distributed import start as start_group
from .hooks import (
    BudgetReplan,
    Checkpoint,
    ConsoleLine,
    HistoryFile,
    Hook,
    ReplaceOld,
    TensorBoard,
    over_budget,
    replace_old,
)
from .loop import train_one_epoch
from .parts import build_model, build_parts, freeze_finished_groups, resident_data, schedule_lr
from .schedule import lr_factor, run_progress
from .state import Run, TrainState, laid_schedule, schedule_steps, steps_per_epoch


def train(cfg: RunConfig, out: Path | None = None, data_dir=None, cache_dir=None, resume: bool | str = False,
          overwrite: bool = False, data: ImageDataset | None = None, hooks: Sequence[Hook] = (),
          test: bool = True, wait: bool = False, dist: DistOptions | None = None,
          data_limits: FolderLimits | None = None, started: float | None = None,
          speed: dict | None = None) -> tuple[Path, dict]:
    """Train `cfg` into run folder `out` (resuming it if asked); return (run folder, metrics).

    hooks react to every epoch (see hooks.py; e.g. a tuning pruner that raises to stop the run, which
    stays resumable). test=False leaves the test set alone (tuning trials select on the validation split
    only): metrics.json then holds the validation figures and "test_evaluated": false. One process trains
    a folder at a time: another one holding it is an error, or (wait=True, resume="auto") waited for.
    Under torchrun every rank calls this and they train one model (distributed.py; `dist` says how).
    The images are the config's `dataset` (data/dataset.py), unless `data` is given; data_limits bound loading
    a folder of images. started: the time.perf_counter() the run's clock (and a time budget) counts from, when
    work for the run began before this call (choosing the recipe for a budget, pick.py); default now. speed: this
    machine's speed for `cfg` measured before this call (the recipe picker's probe, budget.measure_speed): a time
    budget is planned from it instead of measuring again (one process only; a new run, not a resumed one)."""
    clock = Stopwatch(started)
    group = start_group(cfg.device, dist)
    try:
        with contextlib.ExitStack() as held:
            out, mode, cfg, has_checkpoint = group.on_main(
                lambda: open_folder(held, cfg, out, resume, overwrite, wait, group))
            if mode == "finished":
                console.print(f"{out} is already finished; nothing to resume", markup=False)
                return out, group.on_main(lambda: read_metrics(out))
            return train_in(cfg, out, mode, has_checkpoint, group, clock, data or group.main_first(
                lambda: load_dataset(cfg.dataset, data_dir, cache_dir, data_limits, cfg.image_size)), cache_dir, hooks,
                test, speed)
    except (DistError, RuntimeError) as e:
        if not group_failure(group, e):
            raise
        raise lost_group(group, e, f"continue from the last checkpoint with `--resume --out {out or 'RUN'}`") from None
    finally:
        group.close()


def train_in(cfg: RunConfig, out: Path, mode: str, has_checkpoint: bool, group: Dist, clock: Stopwatch,
             data: ImageDataset, cache_dir, hooks: Sequence[Hook], test: bool,
             speed: dict | None = None) -> tuple[Path, dict]:
    """The run itself, once its folder is decided: build → state → epochs → finish."""
    runtime = resolve_runtime(group.device(cfg.device), cfg.precision, cfg.channels_last,
                              cfg.threads or group.default_threads())
    check_batch(cfg.batch_size, group)
    split = make_split(data.train_y, cfg.val_size, cfg.split_seed, cfg.subset, len(data.classes), data.val_idx)
    model, weights_meta = build_model(cfg, data, split, runtime)
    model = group.prepare_model(model)
    resident = resident_data(cfg, data, split, runtime, model, cache_dir)
    run = Run(cfg, out, runtime, build_parts(cfg, model, runtime, wrap=group.wrap), resident, weights_meta, clock,
              steps_per_epoch(len(split.train_idx), cfg.batch_size, group.world_size), dist=group)
    if mode == "resume" and has_checkpoint:
        run.state = resume_state(run)
    else:
        run.state = start_state(run, len(data.test_y) if test else 0, speed)
        group.on_main(lambda: start_folder(run, mode, data, split))
    run.state = group.broadcast(run.state)  # rank 0's plan (a time budget's) on every rank
    note_world_size(run)
    if group.main:  # the other ranks write nothing, print nothing
        run.hooks = [HistoryFile(), ConsoleLine(), *([BudgetReplan()] if run.state.budget else []), Checkpoint(),
                     *([ReplaceOld()] if run.replaces else []), *([TensorBoard()] if cfg.tensorboard else []), *hooks]
    group.on_main(lambda: [hook.on_train_start(run) for hook in run.hooks])
    announce(run, split)

    while not run.state.finished:
        if run.state.budget and run.state.epoch > 0 and group.on_main(lambda: over_budget(run)):
            run.state.budget["stopped_by_budget"] = True
            console.print(f"stopping before epoch {run.state.epoch + 1}: the next epoch would exceed the time "
                          f"budget")
            break
        row, exact = train_epoch(run)
        record(run, row, exact)
        group.on_main(lambda row=row: [hook.on_epoch_end(run, row) for hook in run.hooks])
        run.state = group.broadcast(run.state)  # what the hooks decided (a re-planned budget) on every rank

    metrics = finish(run, data, test)
    group.on_main(lambda: [hook.on_train_end(run, metrics) for hook in run.hooks])
    return run.out, metrics


def open_folder(held: contextlib.ExitStack, cfg: RunConfig, out: Path | None, resume: bool | str, overwrite: bool,
                wait: bool, group: Dist) -> tuple[Path, str, RunConfig, bool]:
    """(run folder, mode, the config to train — a resumed run's own —, has a checkpoint), holding the folder's
    lock in `held`. After torchrun restarted the workers, this job's unfinished run is resumed."""
    out = Path(out) if out else default_run_dir(cfg)
    held.enter_context(run_lock(out, wait))
    if group.restart and restarted_here(out, group):
        resume, overwrite = True, False
    mode = prepare_run_dir(out, resume, overwrite)
    if mode in ("resume", "finished"):
        cfg, _ = load_run_config(out)
    return out, mode, cfg, checkpoint_path(out).is_file()


def restarted_here(out: Path, group: Dist) -> bool:
    """Is `out` an unfinished run this torchrun job started (its config.json names the job)?"""
    if not (out / "config.json").is_file() or (out / "metrics.json").is_file():
        return False
    try:
        _, doc = load_run_config(out)
    except UserError:
        return False
    return group.job is not None and (doc.get("distributed") or {}).get("job") == group.job


def note_world_size(run: Run) -> None:
    """The state records each stretch of epochs trained with one world size (a run may resume with another)."""
    d, segments = run.dist, run.state.world_sizes
    now = {"world_size": d.world_size, "backend": d.backend, "bn": d.bn if d.active else None}
    if not segments or {k: segments[-1][k] for k in now} != now:
        segments.append({"from_epoch": run.state.epoch + 1, **now})


# --- the phases ------------------------------------------------------------------------------------


def start_state(run: Run, n_test: int, speed: dict | None = None) -> TrainState:
    """A new run's state: the configured epochs, or as many as the time budget fits on this machine (at `speed`
    when it was measured before the run, see train)."""
    cfg, d, budget, g, n = run.cfg, run.data, None, run.dist, run.steps_per_epoch
    sched = schedule_steps(cfg, cfg.epochs, n)
    if cfg.time_budget is not None and speed is not None and g.world_size == 1:
        budget = lay_plan(cfg, speed, spent_s=run.clock(), n_steps=n)
    elif cfg.time_budget is not None:  # speed is measured on copies: the run starts untouched
        # every rank measures its share at once (rank 0's plan is kept): its local batch, its images
        local = dataclasses.replace(cfg, batch_size=cfg.batch_size // g.world_size)
        probe = build_parts(local, copy.deepcopy(run.parts.model), run.runtime)
        budget = plan_budget(local, probe.step_model, probe.optimizer, run.runtime, d.train_x, d.train_y,
                             d.train_idx[g.rank::g.world_size], (len(d.val_y) + len(d.sample_y)) // g.world_size,
                             n_test // g.world_size, run.parts.augment, spent_s=run.clock(), n_steps=n)
        del probe
    if budget is not None:
        sched = laid_schedule(cfg, budget["planned_steps"], n)
        console.print(f"time budget {cfg.time_budget:g} min: {budget['train_images_per_s']:,.0f} train img/s "
                      f"(measured by {budget['speed_measured_by']}) → {epochs_text(budget['planned_epochs'])} planned "
                      f"(schedule scaled to them)")
        if budget["planned_seconds"] > cfg.time_budget * 60:
            console.print(f"time budget: not even a quarter of an epoch fits in {cfg.time_budget:g} min on this "
                          f"machine (~{budget['planned_seconds']:.0f} s with the test pass); training "
                          f"{epochs_text(budget['planned_epochs'])} anyway")
    return TrainState(math.ceil(sched["total"] / n), sched["total"], sched["warmup"], budget=budget)


def resume_state(run: Run) -> TrainState:
    """Model, optimizer, extra modules and loop state from the run's last checkpoint."""
    p = run.parts  # the other ranks read rank 0's checkpoint as broadcast bytes (no shared file system needed)
    folder = run.dist.mirror(run.out, [str(checkpoint_path(Path()))])
    saved = load_checkpoint(checkpoint_path(folder), p.model, p.optimizer, p.extra)
    state = TrainState.from_dict(saved, lambda epochs: schedule_steps(run.cfg, epochs, run.steps_per_epoch))
    if p.lookahead is not None:
        p.lookahead.started = state.lookahead_started
    console.print(f"resuming {run.out} after epoch {state.epoch}")
    return state


def start_folder(run: Run, mode: str, data: ImageDataset, split: Split) -> None:
    """A new run's folder and config.json. --overwrite builds the new run beside the old one, which it
    replaces only once the new run has its first checkpoint (hooks.ReplaceOld): killed before that, the
    old run is untouched."""
    if mode == "overwrite":
        run.replaces, run.out = run.out, staging_dir(run.out)
        shutil.rmtree(run.out, ignore_errors=True)  # a staging folder left by a killed --overwrite
    run.out.mkdir(parents=True, exist_ok=True)
    meta = run.weights_meta
    write_config(run.out, run.cfg, run.runtime, {
        "dataset": run.cfg.dataset, "source": data.source, "classes": data.classes, "split_seed": split.seed,
        "train_images": len(split.train_idx), "val_images": len(split.val_idx), "test_images": len(data.test_y),
        **({"validation": "the data set's own"} if split.given else {}), **folder_summary(data),
        "normalization": {"mean": meta["mean"], "std": meta["std"]}}, trainable_params(run.parts.model),
        run.dist.describe())


def announce(run: Run, split: Split) -> None:
    rt, g = run.runtime, run.dist
    ranks = f" × {g.world_size} ranks ({g.backend}, BatchNorm {g.bn})" if g.active else ""
    console.print(
        f"training {run.cfg.model} ({trainable_params(run.parts.model):,} params) on {len(split.train_idx):,} images, "
        + (f"validating on {len(split.val_idx):,}" if len(run.data.val_y) else "no validation split (--final)")
        + f" | {rt.device} {rt.precision} {'channels_last ' if rt.channels_last else ''}{rt.threads} threads{ranks}"
        f" | run: {run.replaces or run.out}"
        + (f" (replaced after the first epoch; until then the new run is in {run.out})" if run.replaces else ""),
        markup=False)


RANK_STREAMS = 16  # rank r draws its dropout and augmentation from streams 1 + 16r and 2 + 16r (rank 0: as one process)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch): resume needs no saved RNG state."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63)


def train_epoch(run: Run) -> tuple[dict, dict]:
    """One pass over the training split, then validation (and the train sample) in eval mode:
    (the epoch's history row, its seconds and validation figures unrounded). Across ranks each takes its
    slice of every global batch (distributed.local_order) and figures are summed over ranks."""
    cfg, st, p, d, rt, g = run.cfg, run.state, run.parts, run.data, run.runtime, run.dist
    epoch = st.epoch + 1
    t0 = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(epoch_seed(cfg.seed, epoch, 0))
    order = d.train_idx[torch.randperm(len(d.train_idx), generator=gen).to(rt.device)]
    mine = local_order(order, cfg.batch_size, g)
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 1 + RANK_STREAMS * g.rank))  # dropout
    g_aug = torch.Generator(device="cpu").manual_seed(epoch_seed(cfg.seed, epoch, 2 + RANK_STREAMS * g.rank))
    freeze_finished_groups(p.optimizer, epoch)
    first, n, local = (epoch - 1) * run.steps_per_epoch, run.steps_per_epoch, cfg.batch_size // g.world_size

    def steps_left() -> int:  # a time budget may end the run's last epoch part of the way (and move that end)
        return st.end_step(n) - first

    def bar() -> tuple[str, int]:  # the progress bar's label and images, as the plan now stands
        steps = steps_left()
        return (f"epoch {epoch}/{st.last_epoch}" + (f" (its first {steps / n:.0%})" if steps < n else ""),
                min(len(mine), steps * local))

    try:
        with image_progress(*bar()) as advance:
            tr = train_one_epoch(p.step_model, p.optimizer, d.train_x, d.train_y, mine, rt, local, p.scaler,
                                 on_batch=lambda k: advance(k, *bar()), augment=p.augment, epoch=epoch, generator=g_aug,
                                 lr_at=lr_schedule(run), start_step=first, label_smoothing=cfg.label_smoothing,
                                 ema=p.ema, after_step=after_steps(lookahead_step(run, epoch), budget_check(run, t0)),
                                 steps=steps_left if st.budget else None)
    except TrainingDiverged as e:
        kept = (f"last good checkpoint: epoch {st.epoch} in {checkpoint_path(run.out)}" if st.epoch
                else "no epoch finished")
        raise TrainingDiverged(f"training diverged in epoch {epoch}: {e}; {kept}") from None
    images = tr["images"]
    if g.active:  # the epoch's figures over every rank's images
        loss_sum, correct, images = g.sum([tr["loss"] * images, tr["accuracy"] * images, images])
        tr = {"loss": loss_sum / images, "accuracy": correct / images}
        g.average_bn_stats(p.model, *(p.extra or {}).values())
    if p.lookahead is not None and p.lookahead.started:
        p.lookahead.pull(p.fit, 1.0)  # every epoch ends on the averaged weights
        st.lookahead_started = True
    train_time = time.perf_counter() - t0
    predict = g.sharded(predict_logits)
    va = evaluate(p.eval_model, d.val_x, d.val_y, rt, cfg.eval_batch_size, predict=predict) if len(d.val_y) else None
    te = (evaluate(p.eval_model, d.sample_x, d.sample_y, rt, cfg.eval_batch_size, predict=predict)
          if len(d.sample_y) else None)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch, "train_loss": round(tr["loss"], 6), "train_accuracy": round(tr["accuracy"], 6),
           "val_loss": round(va["loss"], 6) if va else "", "val_accuracy": round(va["accuracy"], 6) if va else "",
           "lr": schedule_lr(p.optimizer), "seconds": round(seconds, 3),
           "images_per_s": round(images / train_time, 1),
           "train_eval_loss": round(te["loss"], 6) if te else "",
           "train_eval_accuracy": round(te["accuracy"], 6) if te else ""}
    exact = {"seconds": seconds, "eval_seconds": seconds - train_time, "val_loss": va["loss"] if va else None,
             "val_accuracy": va["accuracy"] if va else None}
    return row, exact


def lr_schedule(run: Run):
    """lr_at(step) for the loop, or None for a constant learning rate without warm-up."""
    cfg, st = run.cfg, run.state
    if cfg.schedule == "constant" and st.schedule_warmup == 0:
        return None

    def lr_at(step: int) -> float:
        return cfg.lr * lr_factor(cfg.schedule, step, st.schedule_total, st.schedule_warmup, cfg.lr_start_factor,
                                  cfg.lr_end_factor, st.schedule_anchor)

    return lr_at


def lookahead_step(run: Run, epoch: int):
    """after_step(step) for the loop: Lookahead from its first epoch on, else None."""
    la = run.parts.lookahead
    if la is None or epoch < run.cfg.lookahead_from_epoch:
        return None
    st = run.state
    return lambda step: la.step(run.parts.fit, step, run_progress(step, st.schedule_total, st.progress_anchor))


def budget_check(run: Run, started: float):
    """after_step(step) for the loop under a time budget: at CHECKS of the epoch (begun at perf_counter()
    `started`; and at an eighth of it when the plan ends at its first quarter), rank 0 checks the plan against
    this epoch's pace so far (or the last epoch's, if that was slower) and every rank takes its decision
    (budget.replan); else None."""
    st, n = run.state, run.steps_per_epoch
    if not st.budget:
        return None
    first = st.epoch * n  # the global step the epoch began after
    images = len(run.data.train_idx)
    eighth = st.end_step(n) - first <= epoch_ends(n)[0]  # the plan ends at this epoch's first quarter
    at = {first + k: (k, fraction) for k, fraction in check_points(n, run.cfg.batch_size, images, eighth).items()}

    def check(step: int) -> tuple | None:
        steps_done, fraction = at[step]
        last = st.history[-1] if st.history else None
        train_s = (time.perf_counter() - started) / fraction
        if last is not None:  # the slower of this epoch's pace and the last epoch's
            last_train_s = images / last["images_per_s"]
            train_s, val_s = max(train_s, last_train_s), max(0.0, last["seconds"] - last_train_s)
        else:
            val_s = st.budget.get("validation_s", 0.0)  # (a plan saved before it was kept: none)
        record = replan(run.cfg, st, run.clock(), train_s, val_s, n, steps_done)
        if record is None:
            return None
        console.print(replan_line(record))
        return st.plan()

    def after_step(step: int) -> None:
        if step in at:
            decided = run.dist.on_main(lambda: check(step))  # every rank at the same step: rank 0's decision
            if decided is not None:
                st.take_plan(decided)

    return after_step


def after_steps(*calls):
    """One after_step(step) for the loop that makes each of `calls` that is not None, in order."""
    calls = [c for c in calls if c is not None]
    if not calls:
        return None
    return lambda step: [c(step) for c in calls]


def is_better(cfg: RunConfig, value: float | None, best: float | None) -> bool:
    if value is None or best is None:  # --final has no validation: the latest epoch is kept
        return True
    return value < best if cfg.monitor == "val_loss" else value > best


def record(run: Run, row: dict, exact: dict) -> None:
    """The epoch into the state; the best weights (by the monitored validation figure) into model.safetensors;
    under a time budget, the final test pass re-estimated from this epoch's evaluation (budget.final_eval_left)."""
    cfg, st = run.cfg, run.state
    st.history.append(row)
    st.epoch = row["epoch"]
    st.train_seconds += exact["seconds"]
    if st.budget and (final_s := final_eval_at_run_pace(st.budget, exact["eval_seconds"])) is not None:
        st.budget["final_eval_s_at_run_pace"] = final_s
    monitored = exact[cfg.monitor]
    run.improved = run.dist.broadcast(is_better(cfg, monitored, st.best))  # rank 0 decides
    if run.improved:
        st.best, st.best_epoch, st.wait = monitored, st.epoch, 0
        st.best_val_accuracy = exact["val_accuracy"]
        run.dist.on_main(lambda: save_weights(run.out / "model.safetensors", run.parts.saved_model,
                                              {**run.weights_meta, "epoch": st.epoch}))
    else:
        st.wait += 1
        st.stopped_early = cfg.patience > 0 and st.wait >= cfg.patience


def finish(run: Run, data: ImageDataset, test: bool) -> dict:
    """The test set once, with the best weights (single view, and the recipe's TTA); metrics.json.
    Across ranks each predicts its shard of the test set and rank 0 writes the figures."""
    cfg, st, g = run.cfg, run.state, run.dist
    g.on_main(lambda: replace_old(run))
    if st.stopped_early:
        console.print(f"early stopping: no {cfg.monitor} improvement for {cfg.patience} epochs; "
                      f"restoring epoch {st.best_epoch}")
    if test:
        best = g.mirror(run.out, ["config.json", "model.safetensors"])
        metrics = test_figures(best, data, run.runtime, cfg, predict=g.sharded(predict_logits))
    else:
        metrics = {"test_evaluated": False, "model": cfg.model, "trainable_params": trainable_params(run.parts.model)}
    metrics.update(epochs=st.epoch, best_epoch=st.best_epoch, best_val_accuracy=st.best_val_accuracy,
                   train_seconds=round(st.train_seconds, 2), stopped_early=st.stopped_early,
                   wall_seconds=round(run.clock(), 2))
    if run.data.features_seconds is not None:
        metrics["features_seconds"] = run.data.features_seconds
    if st.budget:
        n = run.steps_per_epoch  # the last epoch may have ended part of the way: 8.5 epochs run
        metrics["budget"] = {**st.budget, "epochs_run": epochs_of(min(st.epoch * n, st.end_step(n)), n),
                             "wall_seconds": round(run.clock(), 2)}
    if any(s["world_size"] > 1 for s in st.world_sizes):
        metrics["distributed"] = st.world_sizes
    out, metrics = g.on_main(lambda: (run.out, write_metrics(run.out, metrics)))
    run.out = out
    return metrics
