"""Learning-rate schedules as plain functions of the step: nothing to save, exact on resume.

    factor(step) multiplies the config's lr; `total` is the number of optimizer steps of the run.
    constant   1 (after the warm-up)
    onecycle   linear from 0 to 1 over the warm-up, then linear down to 0 at the end
    cosine     linear warm-up, then half a cosine from 1 to 0
"""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "onecycle":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")
