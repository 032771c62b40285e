"""Where a training step's convolution time goes on this CPU, and what was tried to win it back.

    .venv/bin/python benchmarks/conv_speed.py [--repeats 2] [--out benchmarks/results/speed/conv_speed.json]

For every trained convolution of the seed model (batch 32 and 128) and of `fast` (batch 1,024) — the shapes are
read off the real models by forward hooks — the GFLOP/s of the three passes a training step runs:
forward, input gradient and weight gradient (`aten.convolution_backward`, one gradient at a time), by

    onednn-cl      what `train` runs here: oneDNN on channels_last tensors (the project default)
    onednn-nchw    oneDNN on contiguous NCHW tensors
    im2col         oneDNN switched off (torch.backends.mkldnn.flags(enabled=False)): unfold + BLAS GEMM, NCHW

and two other ways to the weight gradient, each checked against oneDNN's result before it is timed:

    taps           9 GEMMs, one per kernel tap: grad_out (NHW×K)ᵀ · the shifted input (NHW×C)
    transposed     one forward convolution of the input with grad_out, batch and channels swapped

Tensors are in the precision `train` uses here (bf16 where the CPU has it, else float32). A layer whose input
needs no gradient (the image) skips the input-gradient pass, as training does. Every rate is the best of
--repeats timed calls after a warm-up call. Per model, the convolution seconds of one training step follow from
the FLOPs and the rates: with oneDNN as `train` runs it, and with the best way found for each pass. The file
keeps the sitting's attainable GFLOP/s (flops.attainable_gflops) and its provenance; docs/frontier.md's table is
generated from it. Run it alone on the CPU: every figure is a timing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from kept_runs import exit_code
from torch import nn

CASES = (("seed", 32), ("seed", 128), ("fast", 1024))  # (model, the batch its recipes train at)
PASSES = ("forward", "input_grad", "weight_grad")
WEIGHT_GRAD_ONLY = ("taps", "transposed")


def trained_convs(model_name: str, batch: int) -> list[dict]:
    """The trained convolutions of the model as a training step meets them: shapes, stride, padding and whether
    the input needs a gradient, from forward hooks on one training batch."""
    from cifar10cnn.models import build_classifier

    model = build_classifier(model_name, torch.zeros(3), torch.ones(3), 10).train()
    found: list[dict] = []

    def hook(conv: nn.Conv2d, inputs, output) -> None:
        if conv.weight.requires_grad:
            found.append({"layer": name_of[conv], "x": tuple(inputs[0].shape), "w": tuple(conv.weight.shape),
                          "out": tuple(output.shape), "stride": conv.stride, "padding": conv.padding,
                          "input_grad": inputs[0].requires_grad})

    name_of = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    handles = [m.register_forward_hook(hook) for m in name_of]
    model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    for h in handles:
        h.remove()
    for f in found:
        f["x"] = (batch, *f["x"][1:])
        f["out"] = (batch, *f["out"][1:])
    return found


def best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def pass_calls(conv: dict, channels_last: bool, dtype: torch.dtype) -> dict:
    """{pass: a call that runs it} for one layout, with random tensors of the layer's shapes."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(conv["x"], dtype=dtype).contiguous(memory_format=fmt)
    w = (torch.randn(conv["w"], dtype=dtype) * 0.05).contiguous(memory_format=fmt)
    go = torch.randn(conv["out"], dtype=dtype).contiguous(memory_format=fmt)
    stride, padding = list(conv["stride"]), list(conv["padding"])

    def backward(mask: list[bool]):
        return lambda: torch.ops.aten.convolution_backward(go, x, w, None, stride, padding, [1, 1], False, [0, 0], 1,
                                                           mask)

    calls = {"forward": lambda: F.conv2d(x, w, stride=stride, padding=padding),
             "weight_grad": backward([False, True, False])}
    if conv["input_grad"]:
        calls["input_grad"] = backward([True, False, False])
    return calls


def weight_grad_ways(conv: dict, dtype: torch.dtype) -> dict:
    """{way: a call giving the weight gradient} for the two ways that are not a convolution backward (3×3, stride 1,
    padding 1 only), on channels_last tensors as training holds them."""
    n, c, h, wd = conv["x"]
    k = conv["w"][0]
    if conv["w"][2:] != (3, 3) or tuple(conv["stride"]) != (1, 1) or tuple(conv["padding"]) != (1, 1):
        return {}
    x = torch.randn(conv["x"], dtype=dtype).contiguous(memory_format=torch.channels_last)
    go = torch.randn(conv["out"], dtype=dtype).contiguous(memory_format=torch.channels_last)

    def taps() -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1))
        g = go.permute(0, 2, 3, 1).reshape(-1, k)  # NHW × K: free on channels_last
        out = torch.empty(k, c, 3, 3, dtype=dtype)
        for i in range(3):
            for j in range(3):
                out[:, :, i, j] = g.T @ padded[:, :, i:i + h, j:j + wd].permute(0, 2, 3, 1).reshape(-1, c)
        return out

    def transposed() -> torch.Tensor:
        return F.conv2d(x.transpose(0, 1), go.transpose(0, 1), padding=1).transpose(0, 1)

    w = torch.randn(conv["w"], dtype=dtype).contiguous(memory_format=torch.channels_last)
    reference = torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                    [False, True, False])[1]
    for name, way in (("taps", taps), ("transposed", transposed)):
        err = ((way().float() - reference.float()).abs().max() / reference.float().abs().max()).item()
        if err > (1e-4 if dtype == torch.float32 else 5e-2):  # bf16 keeps 8 bits of mantissa
            raise AssertionError(f"{name} weight gradient differs from oneDNN's by {err:.1e} (relative)")
    return {"taps": taps, "transposed": transposed}


def measure_layer(conv: dict, repeats: int, dtype: torch.dtype) -> dict:
    flop = 2 * conv["out"][0] * conv["out"][2] * conv["out"][3] * conv["w"][0] * conv["w"][1] * conv["w"][2] \
        * conv["w"][3]
    rates: dict[str, dict[str, float]] = {}
    for way, channels_last, onednn in (("onednn-cl", True, True), ("onednn-nchw", False, True),
                                       ("im2col", False, False)):
        with torch.backends.mkldnn.flags(enabled=onednn):
            rates[way] = {p: round(flop / best_seconds(call, repeats) / 1e9, 1)
                          for p, call in pass_calls(conv, channels_last, dtype).items()}
    for way, call in weight_grad_ways(conv, dtype).items():
        rates[way] = {"weight_grad": round(flop / best_seconds(call, repeats) / 1e9, 1)}
    return {"layer": conv["layer"], "x": list(conv["x"]), "w": list(conv["w"]), "input_grad": conv["input_grad"],
            "gflop_per_pass": round(flop / 1e9, 4), "gflops_per_s": rates}


def step_seconds(layers: list[dict], best: bool) -> dict[str, float]:
    """{pass: convolution seconds of one training step}: at oneDNN channels_last, or at the best way of each pass."""
    out = dict.fromkeys(PASSES, 0.0)
    for layer in layers:
        for p in PASSES:
            rates = [r[p] for way, r in layer["gflops_per_s"].items() if p in r and (best or way == "onednn-cl")]
            if rates:
                out[p] += layer["gflop_per_pass"] / max(rates)
    return {p: round(s, 4) for p, s in out.items()}


def main() -> int:
    from cifar10cnn.fileio import atomic_write_json
    from cifar10cnn.flops import attainable_gflops
    from cifar10cnn.provenance import provenance
    from cifar10cnn.runtime import resolve_runtime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per rate (the best is kept)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed/conv_speed.json"))
    args = ap.parse_args()
    rt = resolve_runtime("cpu", "auto", True, None)  # bf16 where the CPU has it, as `train` runs
    dtype = rt.amp_dtype or torch.float32
    torch.manual_seed(0)
    models = []
    for model_name, batch in CASES:
        layers = []
        for conv in trained_convs(model_name, batch):
            layers.append(measure_layer(conv, args.repeats, dtype))
            r = layers[-1]["gflops_per_s"]
            print(f"{model_name} b{batch} {layers[-1]['layer']}: " + "; ".join(
                f"{way} " + "/".join(f"{v:.0f}" for v in rates.values()) for way, rates in r.items()), flush=True)
        models.append({"model": model_name, "batch_size": batch, "layers": layers,
                       "conv_seconds_per_step": step_seconds(layers, best=False),
                       "conv_seconds_per_step_best_ways": step_seconds(layers, best=True)})
    result = {"about": "GFLOP/s of each trained convolution's passes (forward, input gradient, weight gradient) "
                       "by oneDNN as training runs it and by the alternatives; benchmarks/conv_speed.py",
              "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "models": models,
              "attainable_gflops_per_s": attainable_gflops(rt),
              "provenance": {**provenance(), "command": shlex.join([Path(sys.executable).name, *sys.argv])}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
