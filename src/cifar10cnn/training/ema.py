"""Exponential moving average of a model's weights (evaluated and saved instead of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers(), strict=True):
            e.copy_(b)


class Lookahead:
    """Lookahead with a growing average (airbench's variant of Zhang et al. 2019): every `every` steps from
    its first epoch, the running average moves towards the weights, ``avg ← ρ·avg + (1 − ρ)·w``, and the
    weights jump back to it, ``w ← avg``. ρ = 0.95^every · progress³, with the run's progress (step / total;
    schedule.run_progress), grows from 0 (no averaging while the weights move fast) to 0.95^every at the end
    (strong averaging as the lr anneals). Buffers (BatchNorm statistics) are averaged too. `module` holds the
    average (saved in checkpoints for resume)."""

    def __init__(self, model: nn.Module, every: int, base: float = 0.95, power: float = 3.0) -> None:
        self.every, self.base, self.power = every, base, power
        self.module = copy.deepcopy(model)
        self.started = False

    def _pairs(self, model: nn.Module):
        return [(a, w) for a, w in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True)
                if w.is_floating_point()]

    @torch.no_grad()
    def step(self, model: nn.Module, step: int, progress: float) -> None:
        """Call after optimizer step number `step` (1-based, global), `progress` (0–1) of the way through the run."""
        if step % self.every:
            return
        if not self.started:  # the average starts from the weights of its first step
            for a, w in self._pairs(model):
                a.copy_(w)
            self.started = True
            return
        self.pull(model, self.base ** self.every * progress ** self.power)

    @torch.no_grad()
    def pull(self, model: nn.Module, decay: float) -> None:
        """avg ← decay·avg + (1 − decay)·w, then w ← avg (decay 1: just jump back to the average)."""
        for a, w in self._pairs(model):
            a.lerp_(w, 1.0 - decay)
            w.copy_(a)
