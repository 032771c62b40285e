"""Muon for convolution filters, SGD for everything else: one optimizer (one state to checkpoint, one set of
parameter groups for the schedule), after Keller Jordan's airbench94_muon.

A group with "muon": True takes Muon's step for each filter W (out × in × kh × kw, seen as an
out × (in·kh·kw) matrix):
    m ← μ·m + g                       momentum buffer (μ = the group's "momentum")
    u ← g + μ·m  (Nesterov) or m
    W ← W · sqrt(out) / ‖W‖            the filter keeps a fixed norm (airbench: it makes the lr a rotation size)
    W ← W − lr · orthogonalise(u)     u's singular values pushed towards 1 by Newton–Schulz iterations
Every other group takes torch's own SGD step (Nesterov momentum, coupled weight decay), unchanged.

`torch.optim.Muon` (torch ≥ 2.9) is the same idea but only takes 2-D parameters, and neither renormalises the
weights nor combines with SGD in one optimizer; hence this small class.
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd

# the quintic Newton–Schulz coefficients of Muon (Jordan et al. 2024): maximise the slope at 0, so a few steps
# suffice to push every singular value into roughly [0.7, 1.2]
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """≈ U·Vᵀ of the 2-D matrix g = U·S·Vᵀ (its nearest semi-orthogonal matrix), by `steps` Newton–Schulz
    iterations in float32 (bf16 on CUDA)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + eps)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """groups: dicts with "params", "lr", "momentum", "weight_decay" and "muon" (True: filters, Muon's step;
    False: SGD with Nesterov momentum). Muon groups ignore weight decay (the norm is fixed instead)."""

    def __init__(self, groups: list[dict], ns_steps: int = 3) -> None:
        super().__init__(groups, {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0, "muon": False,
                                  "ns_steps": ns_steps})
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups take filters and matrices (≥ 2-D parameters) only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params or group["lr"] == 0:
                continue
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            if not group["muon"]:
                sgd(params, [p.grad for p in params], bufs, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["momentum"] > 0,
                    maximize=False, foreach=True)
                for p, buf in zip(params, bufs, strict=True):
                    self.state[p]["momentum_buffer"] = buf
                continue
            for p, buf in zip(params, bufs, strict=True):
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                buf.mul_(group["momentum"]).add_(p.grad)
                update = p.grad.add(buf, alpha=group["momentum"])  # Nesterov
                p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                p.add_(orthogonalise(update.reshape(len(update), -1), group["ns_steps"]).view_as(p),
                       alpha=-group["lr"])
        return loss
