"""Learning-rate schedules as plain functions of the step: nothing to save, exact on resume.

    factor(step) multiplies the config's lr; `total` is the number of optimizer steps of the run.
    warm-up    linear from `start` to 1 over the first `warmup` steps (every schedule)
    constant   1 (after the warm-up)
    onecycle   then linear down to `end` at the last step (start 0.2, end 0.07, warm-up 23%: airbench's triangle)
    cosine     then half a cosine from 1 to `end`
"""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total: int, warmup: int, start: float = 0.0, end: float = 0.0) -> float:
    if warmup > 0 and step < warmup:
        return start + (1.0 - start) * (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "onecycle":
        return max(end, 1.0 - (1.0 - end) * progress)
    if schedule == "cosine":
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")
