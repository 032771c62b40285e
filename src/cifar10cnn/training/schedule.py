"""Learning-rate schedules as plain functions of the step: nothing to save, exact on resume.

    factor(step) multiplies the config's lr; `total` is the number of optimizer steps of the run.
    warm-up    linear from `start` to 1 over the first `warmup` steps (every schedule)
    constant   1 (after the warm-up)
    onecycle   then linear down to `end` at the last step (start 0.2, end 0.07, warm-up 23%: airbench's triangle)
    cosine     then half a cosine from 1 to `end`

The decay follows its progress, 0 after the warm-up to 1 at the last step. A time budget that re-plans the run's
length mid-run (budget.py) lays the rest of the decay from where it is: `anchor` = (step, progress at that step),
and from there the progress runs on to 1 at the new last step, so the learning rate never jumps. The run's own
progress (`run_progress`: step/total, which Lookahead's averaging follows) is continued the same way.
"""

from __future__ import annotations

import math


def decay_progress(step: int, total: int, warmup: int, anchor: tuple[int, float] | None = None) -> float:
    """How far the decay has gone at `step`: 0 at the end of the warm-up, 1 at the last step (`total`); from an
    anchor (step a, progress p) on, linear from p at a to 1 at `total`."""
    if anchor is not None and step >= anchor[0]:
        a, p = anchor
        return min(1.0, p + (1.0 - p) * (step - a) / max(1, total - a))
    return min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))


def run_progress(step: int, total: int, anchor: tuple[int, float] | None = None) -> float:
    """How far the run has gone at `step`: step/total; from an anchor (step a, progress q) on, linear from q at a
    to 1 at `total` (a re-planned run's length)."""
    return decay_progress(step, total, 0, anchor)


def lr_factor(schedule: str, step: int, total: int, warmup: int, start: float = 0.0, end: float = 0.0,
              anchor: tuple[int, float] | None = None) -> float:
    if warmup > 0 and step < warmup:
        return start + (1.0 - start) * (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = decay_progress(step, total, warmup, anchor)
    if schedule == "onecycle":
        return max(end, 1.0 - (1.0 - end) * progress)
    if schedule == "cosine":
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")
