"""Where the time goes against what the machine can do: FLOPs per image and this device's attainable GFLOP/s.

    model_flops(model, runtime)   matmul + convolution FLOPs per image of one training step (forward and backward,
                                  as autograd runs it) and of one inference forward pass, counted by
                                  torch.utils.flop_counter on a small batch (BatchNorm, activations, pooling and
                                  the optimizer are memory-bound work and not counted: the usual "model FLOPs")
    attainable_gflops(runtime)    the best measured rate of a large matmul and of a large 3×3 convolution
                                  (forward + backward) in the run's precision on this device: the practical
                                  ceiling that a training step's convolutions could reach

achieved GFLOP/s = FLOPs per image × images/s; its fraction of the attainable rate says how much room is left.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .runtime import Runtime


def model_flops(model: nn.Module, runtime: Runtime, image_size: int = 32, batch: int = 4) -> dict[str, float]:
    """{"train": FLOPs per image of forward + backward, "eval": FLOPs per image of a forward pass}. The model is
    used as it is (on its device, in its precision); its parameters' .grad are cleared afterwards."""
    x = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=runtime.device)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), runtime.autocast(), counter:
            model(x)
        eval_flops = counter.get_total_flops() / batch
        model.train()
        counter = FlopCounterMode(display=False)
        with counter:
            with runtime.autocast():
                out = model(x)
            out.float().sum().backward()
        train_flops = counter.get_total_flops() / batch
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {"train": float(train_flops), "eval": float(eval_flops)}


def _best_rate(fn, flops: float, min_seconds: float) -> float:
    """The best GFLOP/s of fn() over repetitions lasting ≥ min_seconds in all (after one warm-up call)."""
    fn()
    best, spent = 0.0, 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, flops / dt / 1e9)
    return best


def attainable_gflops(runtime: Runtime, min_seconds: float = 1.0) -> dict[str, float | str]:
    """The attainable rate (GFLOP/s) of this device in the run's precision: a 2,048² matmul, and a 3×3
    convolution of 128 → 128 channels on 64 images of 16×16 (channels_last when the run uses it), forward +
    backward (both gradients) as a training step runs it. "peak" is the better of the two."""
    dtype = runtime.amp_dtype or torch.float32
    dev = runtime.device
    n = 2048
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    matmul = _best_rate(lambda: a @ b, 2 * n**3, min_seconds)

    batch, c, hw = 64, 128, 16
    x = torch.randn(batch, c, hw, hw, device=dev, dtype=dtype, requires_grad=True)
    w = torch.randn(c, c, 3, 3, device=dev, dtype=dtype, requires_grad=True)
    if runtime.channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        w = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    grad_out = torch.randn(batch, c, hw, hw, device=dev, dtype=dtype)

    def conv_step():
        out = F.conv2d(x, w, padding=1)
        torch.autograd.grad(out, (x, w), grad_out)

    conv_flops = 3 * 2 * batch * c * c * 9 * hw * hw  # forward, input gradient, weight gradient
    conv = _best_rate(conv_step, conv_flops, min_seconds)
    return {"dtype": str(dtype).removeprefix("torch."), "matmul": round(matmul, 1), "conv": round(conv, 1),
            "peak": round(max(matmul, conv), 1)}
