"""A run in progress (`Run`: what the engine's phases and the hooks see) and its loop state (`TrainState`:
everything that changes from epoch to epoch, saved in every checkpoint).

A resumed run continues from exactly this state (the learning-rate schedule included: a time budget
may have re-laid it over fewer or more epochs), so it ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..progress import Stopwatch
from ..runtime import Runtime
from .distributed import Dist
from .parts import Parts, Resident


@dataclass
class TrainState:
    last_epoch: int  # the epoch the run ends in (a time budget may end it part-way, and a re-plan move it)
    schedule_total: int  # optimizer steps the learning-rate schedule spans (a time budget's run ends there)
    schedule_warmup: int  # of which warm-up steps
    schedule_anchor: list | None = None  # [step, decay progress]: a time budget re-laid the decay from there
    progress_anchor: list | None = None  # [step, run progress]: and the run's length (Lookahead follows it)
    epoch: int = 0  # epochs finished
    best: float | None = None  # best monitored validation value so far
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    wait: int = 0  # epochs since the monitored value last improved
    stopped_early: bool = False
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # the rows of history.csv
    budget: dict | None = None  # the time budget's plan and re-plans
    lookahead_started: bool = False
    world_sizes: list[dict] = field(default_factory=list)  # [{"from_epoch", "world_size", "backend", "bn"}]

    @property
    def finished(self) -> bool:
        return self.epoch >= self.last_epoch or self.stopped_early

    def end_step(self, steps_per_epoch: int) -> int:
        """The optimizer step the run ends at: after its planned epochs, or where the schedule ends in the last of
        them (a time budget's plan may end a quarter, half or three quarters into it)."""
        return min(self.last_epoch * steps_per_epoch, self.schedule_total)

    def plan(self) -> tuple:
        """The run's length and schedule, which a time budget's re-plan changes (`take_plan` applies them)."""
        return (self.last_epoch, self.schedule_total, self.schedule_warmup, self.schedule_anchor,
                self.progress_anchor)

    def take_plan(self, plan: tuple) -> None:
        (self.last_epoch, self.schedule_total, self.schedule_warmup, self.schedule_anchor,
         self.progress_anchor) = plan

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, schedule_of) -> TrainState:
        """From a checkpoint's JSON; checkpoints written before the schedule was saved lay it as they did
        (`schedule_of(last_epoch)`: {"total", "warmup"}, see schedule_steps), and those written before the field
        was named `last_epoch` called it `planned_epochs`."""
        d = dict(d)
        for old, new in RENAMED.items():
            if old in d:
                d.setdefault(new, d.pop(old))  # (both: the new name's)
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "schedule_total" not in d or "schedule_warmup" not in d:
            schedule = schedule_of(d["last_epoch"])
            d.setdefault("schedule_total", schedule["total"])
            d.setdefault("schedule_warmup", schedule["warmup"])
        return cls(**d)


RENAMED = {"planned_epochs": "last_epoch"}  # checkpoint field: its name today (TrainState.from_dict)


def schedule_steps(cfg, epochs: int, steps_per_epoch: int) -> dict:
    """{"total", "warmup"} optimizer steps of cfg's schedule laid over `epochs` (laid_schedule)."""
    return laid_schedule(cfg, epochs * steps_per_epoch, steps_per_epoch)


def laid_schedule(cfg, total: int, steps_per_epoch: int) -> dict:
    """{"total", "warmup"} optimizer steps of cfg's schedule laid over `total` steps. The warm-up is
    `warmup_fraction` of the steps, else `warmup_epochs` epochs — except under a time budget, which sets the run's
    length: there the warm-up keeps its share of the recipe's epochs (seed-aug's 8 of 40 stay a fifth of a 2-epoch
    budget run, rather than a warm-up longer than the run that never reaches the peak nor anneals)."""
    if cfg.warmup_fraction:
        warmup = round(cfg.warmup_fraction * total)
    elif cfg.time_budget is not None:
        warmup = round(min(1.0, cfg.warmup_epochs / cfg.epochs) * total)
    else:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return {"total": total, "warmup": warmup}


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch over `images` at global batch `batch_size`; across ranks, a last partial batch
    with fewer images than ranks is dropped (distributed.local_order)."""
    full, rest = divmod(images, batch_size)
    return full + (1 if rest >= world_size else 0)


@dataclass
class Run:
    """A run in progress: what the engine's phases (engine.py) and the hooks (hooks.py) see."""
    cfg: RunConfig
    out: Path
    runtime: Runtime
    parts: Parts
    data: Resident
    weights_meta: dict  # saved with the weights: model, options, classes, normalisation
    clock: Stopwatch
    steps_per_epoch: int
    state: TrainState | None = None
    improved: bool = False  # did the last epoch improve the monitored validation figure?
    hooks: list = field(default_factory=list)  # the hooks of this run (hooks.py), in order
    replaces: Path | None = None  # train --overwrite: the old run `out` replaces once it has a checkpoint
    dist: Dist = field(default_factory=Dist)  # the process group under torchrun (distributed.py); else one process
