"""`--time-budget MINUTES`: measure this machine's speed, then plan the training that fits.

The speed is measured on a throw-away copy of the model and optimizer (the run itself starts
untouched): a few warm-up steps (batches of ≤ 128 images on a CPU), then 2–64 timed training steps (≥ 2,048
images) with the recipe's augmentation, and a timed evaluation pass. The plan leaves room for validation after
every epoch and for the final test evaluation (×3 forward passes with flip TTA: TTA + the plain figure; ×7 with
multi-crop TTA). The plan is in optimizer steps: whole epochs, and the last one may end at a quarter, half or three
quarters of its steps (`epoch_ends`), so a budget is not left unused for want of a whole epoch (the `fast` run at 60
minutes ended 291 s early, 0.85 of an epoch) and a budget shorter than an epoch is kept to. The learning-rate
schedule is then laid over the planned steps.

During the run the plan is checked against the speed the run really has (`replan`): at a quarter, half and three
quarters of every epoch's images (`check_points`; this epoch's pace so far) and after every epoch (the slower of the
last two). When less fits than planned, or more (with a 5% margin, at the pace of the slowest epoch the run has had:
`up_pace`), the run's end moves to the latest end that fits (`steps_that_fit`) and the rest of the learning-rate decay
is laid from the current rate to it (schedule.py's anchor): the rate never jumps, and it anneals by the end. When
nothing more fits, the run ends where it is, at the check. So a speed measurement that read the machine wrong costs a
quarter of an epoch, not the plan: at 20 minutes `fast-muon` planned 1 epoch from a reading of 97 img/s where its
epoch then ran at 109 and 2 would have fit.
"""

from __future__ import annotations

import itertools
import math
import time

import torch

from ..inference import predict_logits, tta_views
from .loop import train_one_epoch
from .schedule import decay_progress, run_progress
from .state import TrainState, laid_schedule, steps_per_epoch

EVAL_IMAGES = 2000  # timed by a run's own evaluation measurement
UP_MARGIN = 1.05  # a re-plan adds epochs only if they fit at a 5% slower pace (it cannot take them back cheaply)
CHECKS = (0.25, 0.5, 0.75)  # the fractions of every epoch at which the plan is checked, besides its end
PARTS = len(CHECKS) + 1  # and where a run may end: at any quarter of an epoch
# after one warm-up batch of 128 on a 2-core AMD EPYC, fast-muon's first batch of 2,000 trained at 109 img/s and the
# next two at 110 and 115; fast's first of 1,024 at 132, the next two at 128 and 121 (calibration_images)
WARMUP_BATCH = 128
FINAL_EVAL_FIXED_S = 5.0  # of the final test pass, besides its forward passes: loading the weights, writing files
# the run's own evaluation pace may shorten the final test pass's estimate to half of the measured one, no less: a
# small validation split times few batches (the measurement read a 2-core Zen 4 1.6× slow, 78.9 s for 45.6)
FINAL_EVAL_FLOOR = 0.5


def up_pace(history: list[dict], epoch_s: float) -> float:
    """How much slower than `epoch_s` (an epoch's training and validation as now estimated) to assume before adding
    epochs: UP_MARGIN, and at least the slowest whole epoch the run has had (after the first, which may include
    warm-up). Epoch times on a busy 2-core VM vary by ±8% (`resnet` at 60 min: 130–152 s); with the margin
    alone, the plan was re-laid ten times in one run, eight of them between 24 and 25 epochs."""
    slowest = max((row["seconds"] for row in history[1:] or history), default=0.0)
    return UP_MARGIN * max(1.0, slowest / epoch_s) if epoch_s > 0 else UP_MARGIN


def epoch_ends(n_steps: int) -> list[int]:
    """The steps into an epoch of `n_steps` steps at which a time-budget run may end: a quarter, half and three
    quarters of its steps (where the plan is checked, `check_points`) and its end."""
    return sorted({round(q * n_steps / PARTS) for q in range(1, PARTS + 1)} - {0})


def check_points(n_steps: int, batch_size: int, images: int, eighth: bool = False) -> dict[int, float]:
    """{optimizer steps into an epoch: the fraction of its images trained by then} at CHECKS of an epoch of
    `n_steps` steps over `images` at global batch `batch_size` (a last partial batch dropped across ranks is not
    trained), and at an eighth of it if `eighth` (an epoch whose plan ends at its first quarter: else nothing
    checks that plan before its end, where the schedule has annealed and it can no longer grow). The fraction
    counts images, not steps: `fast-muon` trains 22.5 batches of 2,000, and 6 of its 23 steps are 26.7% of the
    epoch's images, not 26.1%; a pace read from the steps made the epoch 2.2% slower than it ran, at every check."""
    trained = min(n_steps * batch_size, images)
    steps = set(epoch_ends(n_steps)) | ({round(n_steps / (2 * PARTS))} if eighth else set())
    return {k: k * batch_size / trained for k in sorted(steps) if 0 < k < n_steps}


def epochs_of(steps: int, steps_per_epoch: int) -> int | float:
    """`steps` optimizer steps in epochs, as the plan and its records show them: 9, or 8.5 when the last epoch ends
    half-way."""
    return steps // steps_per_epoch if steps % steps_per_epoch == 0 else round(steps / steps_per_epoch, 2)


def epochs_text(epochs: float, verb: str = "", width: int = 0) -> str:
    """"1 epoch", "0.5 epochs", "8.5 epochs": for console lines; with a verb that agrees: "1 epoch fits", "1.25
    epochs fit" (verb "fit"); width: the figure right-aligned in that many characters (console columns)."""
    one = epochs == 1
    text = f"{epochs:>{width}g} epoch{'' if one else 's'}"
    return f"{text} {verb}{'s' if one else ''}" if verb else text


def calibration_images(batch_size: int, n_train: int, probe_images: int | None = None,
                       device_type: str = "cpu") -> tuple[int, int, int]:
    """(warm-up batch size, warm-up images, timed images) of a speed measurement. The timed images are whole batches
    of the recipe's batch size (a partial batch is a shape the run never trains: at batch 2,000, 6,144 timed images
    were three batches and one of 144). On a CPU the warm-up trains batches of at most WARMUP_BATCH images: what it
    warms (threads, the allocator, oneDNN's kernels) does not need the recipe's batch, and a warm-up batch of 2,000
    was 18 s of a 5-minute budget; elsewhere (CUDA) the recipe's batches. A run's own: up to 3 warm-up batches
    (≤ 2,048 images unless one batch is more), then ~2,048–3,072 images timed (about 20 batches at small batch
    sizes, 3 of 1,024, 2 of 2,000), enough to time but few enough not to eat a short budget at large batches
    (6,144 until 2026-11-29: 48 s of `fast` on a 2-core CPU; the run re-plans from its own pace a quarter of an
    epoch in). probe_images: a quick estimate instead: one warm-up batch, then about probe_images (at least one
    batch) timed. Capped at the training split."""
    warm_bs = min(batch_size, WARMUP_BATCH) if device_type == "cpu" else batch_size

    def whole(images: int, bs: int = batch_size) -> int:
        return min(bs * max(1, round(images / bs)), n_train)

    if probe_images is not None:
        return warm_bs, whole(warm_bs, warm_bs), whole(probe_images)
    return (warm_bs, whole(warm_bs * max(1, min(3, 2048 // warm_bs)), warm_bs),
            whole(max(2048, min(20 * batch_size, 3 * 1024))))


def steps_that_fit(left_s: float, step: int, epochs_done: int, steps_per_epoch: int, train_s: float,
                   val_s: float) -> int:
    """The last optimizer step a run can reach with `left_s` seconds left before its final test pass, `step` steps
    trained and `epochs_done` epochs validated, when an epoch's training takes `train_s` and its validation `val_s`:
    the latest end of an epoch or of a quarter of one (epoch_ends) whose training and validations fit; `step` itself
    (the run ends there) when none does. Every epoch the run reaches is validated, a last partial one too."""
    n = steps_per_epoch

    def cost(end: int) -> float:
        return (end - step) / n * train_s + (math.ceil(end / n) - epochs_done) * val_s

    best, ends = step, epoch_ends(n)
    last_epoch = step // n + 1 + math.floor(max(0.0, left_s) / max(train_s + val_s, 1e-9))  # none can fit past it
    for epoch in range(step // n, last_epoch + 1):
        for end in (epoch * n + k for k in ends):
            if end <= step:
                continue
            if cost(end) > left_s:
                return best
            best = end
    return best


def fit_steps(budget_s: float, spent_s: float, train_s: float, val_s: float, final_eval_s: float,
              steps_per_epoch: int) -> tuple[int, float]:
    """(optimizer steps planned, seconds planned in all): the latest end (steps_that_fit) after the time spent and
    before the final test pass; a quarter of an epoch at least (a budget too small for it still trains it)."""
    n = steps_per_epoch
    end = max(epoch_ends(n)[0], steps_that_fit(budget_s - spent_s - final_eval_s, 0, 0, n, train_s, val_s))
    return end, spent_s + end / n * train_s + math.ceil(end / n) * val_s + final_eval_s


def fit_speed(budget_s: float, spent_s: float, speed: dict, steps_per_epoch: int) -> tuple[int, float]:
    """fit_steps at a measured `speed` (measure_speed: an epoch's training and validation, the final test pass)."""
    val_s = speed["validation_s"]
    return fit_steps(budget_s, spent_s, speed["estimated_epoch_s"] - val_s, val_s, speed["final_eval_s"],
                     steps_per_epoch)


def relay_schedule(cfg, st: TrainState, step: int, end: int, steps_per_epoch: int) -> None:
    """The schedule laid to end at optimizer step `end` (≥ `step`; the run's epochs follow: the last ends there)
    from step `step` on, continuing from where it is: past the warm-up, the decay goes on from its current progress
    (an anchor) to its end at the new last step; during the warm-up, the warm-up keeps its length, or is shortened
    to the new run's share of it (but not before now). The run's progress (Lookahead's averaging) goes on from
    where it is to 1 at the new last step, too."""
    new = laid_schedule(cfg, end, steps_per_epoch)
    if step >= st.schedule_warmup:
        anchor = [step, decay_progress(step, st.schedule_total, st.schedule_warmup, st.schedule_anchor)]
        warmup = st.schedule_warmup
    else:
        anchor = None
        warmup = st.schedule_warmup if st.schedule_warmup <= new["warmup"] else max(step, new["warmup"])
    progress = [step, run_progress(step, st.schedule_total, st.progress_anchor)]
    st.take_plan((math.ceil(end / steps_per_epoch), end, warmup, anchor, progress))


def replan(cfg, st: TrainState, now_s: float, train_s: float, val_s: float, steps_per_epoch: int,
           steps_done: int) -> dict | None:
    """Check the plan at `now_s` on the run's clock, `steps_done` optimizer steps into the epoch after `st.epoch`
    (0: between epochs), with an epoch's training taking `train_s` and its validation `val_s`: if the run cannot
    reach its planned end, or can reach a later one at `up_pace`'s slower pace while the schedule has steps left,
    move the end (relay_schedule; to this step if nothing more fits) and return the re-plan's record (kept in the
    budget's "replanned"; where it was made and the ends, all in epochs of optimizer steps: epochs_of); else
    None."""
    n = steps_per_epoch
    left = cfg.time_budget * 60 - now_s - final_eval_left(st.budget)
    end = st.end_step(n)
    step = min(st.epoch * n + steps_done, end)
    fits = steps_that_fit(left, step, st.epoch, n, train_s, val_s)
    if fits > end:
        if step >= st.schedule_total:  # the schedule has ended: more steps would only train at its last rate
            return None
        slower = up_pace(st.history, train_s + val_s)
        fits = max(end, steps_that_fit(left, step, st.epoch, n, train_s * slower, val_s * slower))
    if fits == end:
        return None
    record = {"after_epoch": epochs_of(step, n), "epochs": epochs_of(fits, n), "was": epochs_of(end, n)}
    relay_schedule(cfg, st, step, fits, n)
    st.budget.setdefault("replanned", []).append(record)
    return record


def final_eval_at_run_pace(budget: dict, eval_s: float) -> float | None:
    """The final test pass's seconds re-estimated from the run's own evaluation: `eval_s`, what its last epoch's
    validation (with the training sample) took, against the `validation_s` the speed measurement expected for the
    same images: the plan's `final_eval_s` (its forward passes; FINAL_EVAL_FIXED_S stays) scaled by that ratio, at
    least FINAL_EVAL_FLOOR of it. None when there is nothing to compare (no validation: --final; a plan saved
    before `validation_s` was kept). On a 2-core Zen 4, `fast --time-budget 5` measured 947 eval img/s and kept
    78.9 s for a test pass that took 45.6 (1,540 img/s): never corrected, 65 s of the 300 went unused."""
    measured = budget.get("validation_s") or 0.0
    if measured <= 0 or eval_s <= 0:
        return None
    ratio = max(FINAL_EVAL_FLOOR, eval_s / measured)
    return round(FINAL_EVAL_FIXED_S + max(0.0, budget["final_eval_s"] - FINAL_EVAL_FIXED_S) * ratio, 2)


def final_eval_left(budget: dict) -> float:
    """The seconds a budget keeps for the final test pass: from the run's own evaluation pace once an epoch has
    been validated (final_eval_at_run_pace, kept as "final_eval_s_at_run_pace"), else the measured estimate."""
    return budget.get("final_eval_s_at_run_pace", budget["final_eval_s"])


def replan_direction(record: dict) -> str:
    """The word "faster" or "slower": how the machine ran against its measured speed, from a re-plan record."""
    return "faster" if record["epochs"] > record.get("was", record["epochs"]) else "slower"  # older runs: no "was"


def replan_line(record: dict) -> str:
    """The console line of a re-plan (its record from `replan`)."""
    ends = record["epochs"] <= record["after_epoch"]
    where = "after this epoch" if record["after_epoch"] == int(record["after_epoch"]) else "here"
    return (f"time budget: this machine runs {replan_direction(record)} than measured — "
            f"{epochs_text(record['epochs'], 'now fit')} (at epoch {record['after_epoch']:g}, {record['was']:g} "
            "planned); "
            + (f"the run ends {where}" if ends else
               "the rest of the schedule is laid from the current learning rate to end there"))


def measure_speed(cfg, probe_model, probe_optimizer, runtime, train_x, train_y, train_idx, n_val: int, n_test: int,
                  augment, probe_images: int | None = None) -> dict:
    """This machine's speed for `cfg`, timed on a copy of its model (calibration_images says how many images;
    per-image speed depends on the batch size: a probe of `fast` at batch 128 measured 162 img/s on a 2-core AMD
    EPYC, `bench` 133 at its batch of 1,024, so a quick probe also runs at the recipe's own batch size), and what
    an epoch (training + validation of n_val images) and the final test pass (n_test images, every TTA view) take
    at it. "measured_by" names the measurement; "measure_s" is the time it took, "warmup_s" the warm-up's part of it,
    and "step_s" the seconds of each timed training step (on a CPU; None elsewhere): a reading far from the run's
    own pace (`resnet` read 536 img/s where its epochs ran at 675–778) shows there whether one step was slow or
    every one."""
    t_start = time.perf_counter()
    bs = cfg.batch_size
    warm_bs, n_warm, n_time = calibration_images(bs, len(train_idx), probe_images, runtime.device.type)
    g = torch.Generator().manual_seed(2**31 - 1)
    order = train_idx[torch.randperm(len(train_idx), generator=g).to(train_idx.device)]
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None
    kwargs = {"augment": augment, "generator": g, "label_smoothing": cfg.label_smoothing}
    train_one_epoch(probe_model, probe_optimizer, train_x, train_y, order[:n_warm], runtime, warm_bs, scaler,
                    **kwargs)
    warmup_s = time.perf_counter() - t_start
    marks = [time.perf_counter()]  # after each timed step: where a misread comes from (one slow step, or all)
    train_one_epoch(probe_model, probe_optimizer, train_x, train_y, order[:n_time], runtime, bs, scaler,
                    on_batch=lambda _: marks.append(time.perf_counter()), **kwargs)
    train_ips = n_time / (time.perf_counter() - marks[0])
    eval_images = train_x[order[: min(probe_images or EVAL_IMAGES, len(order))]]
    predict_logits(probe_model, eval_images[: cfg.eval_batch_size], runtime, cfg.eval_batch_size)  # warm-up
    t0 = time.perf_counter()
    predict_logits(probe_model, eval_images, runtime, cfg.eval_batch_size)
    eval_ips = len(eval_images) / (time.perf_counter() - t0)

    passes = 1 + (tta_views(cfg.tta_translate) if cfg.tta else 0)  # the single-view figure + the TTA views
    return {"train_images_per_s": train_ips, "eval_images_per_s": eval_ips,
            "estimated_epoch_s": len(train_idx) / train_ips + n_val / eval_ips, "validation_s": n_val / eval_ips,
            "final_eval_s": n_test / eval_ips * passes + FINAL_EVAL_FIXED_S,
            "steps_per_epoch": steps_per_epoch(len(train_idx), bs),
            "measured_by": "the recipe picker's probe" if probe_images else "the run",
            "measure_s": time.perf_counter() - t_start, "warmup_s": warmup_s,
            # a CPU's steps end when the host's call does; a GPU's are only queued then
            "step_s": [b - a for a, b in itertools.pairwise(marks)] if runtime.device.type == "cpu" else None}


def lay_plan(cfg, speed: dict, spent_s: float, n_steps: int) -> dict:
    """The plan (the budget record kept in metrics.json) from a measured `speed` (measure_speed), when `spent_s`
    seconds of the budget are gone ("calibration_s": choosing the recipe, measuring), for a run of `n_steps`
    optimizer steps per epoch."""
    steps, planned_s = fit_speed(cfg.time_budget * 60, spent_s, speed, n_steps)
    return {
        "minutes": cfg.time_budget, "train_images_per_s": round(speed["train_images_per_s"], 1),
        "eval_images_per_s": round(speed["eval_images_per_s"], 1),
        "estimated_epoch_s": round(speed["estimated_epoch_s"], 2), "validation_s": round(speed["validation_s"], 2),
        "final_eval_s": round(speed["final_eval_s"], 2),
        "calibration_s": round(spent_s, 2), "planned_epochs": epochs_of(steps, n_steps), "planned_steps": steps,
        "planned_seconds": round(planned_s, 1),
        "stopped_by_budget": False, "speed_measured_by": speed["measured_by"],
        "speed_warmup_s": round(speed["warmup_s"], 2) if speed.get("warmup_s") is not None else None,
        "speed_step_s": [round(s, 3) for s in speed["step_s"]] if speed.get("step_s") else None,
    }


def plan_budget(cfg, probe_model, probe_optimizer, runtime, train_x, train_y, train_idx, n_val: int, n_test: int,
                augment, spent_s: float, n_steps: int) -> dict:
    """A run's own plan: its speed measured now (measure_speed), after `spent_s` seconds of the budget."""
    speed = measure_speed(cfg, probe_model, probe_optimizer, runtime, train_x, train_y, train_idx, n_val, n_test,
                          augment)
    return lay_plan(cfg, speed, spent_s + speed["measure_s"], n_steps)
