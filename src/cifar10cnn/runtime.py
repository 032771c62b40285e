"""Device, precision, memory format and threads: chosen once per run and recorded in config.json.

Measured on the 2-core reference CPU (Sapphire Rapids, AVX-512 + AMX bf16), seed model, batch 32:
fp32 NCHW 656 img/s, bf16 autocast + channels_last 1,485, + fused Adam 1,548 (see README).
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

import torch

from .errors import UserError
from .provenance import cpu_name


@dataclass
class Runtime:
    device: torch.device
    precision: str  # bf16 | fp16 | fp32
    channels_last: bool
    threads: int

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device, in channels_last when chosen."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=fmt)

    def describe(self) -> dict:
        return {
            "device": str(self.device),
            "device_name": device_name(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "threads": self.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        }


def cpu_has_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"invalid --device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available on this machine; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"invalid --device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True,
                    threads: int | None = None) -> Runtime:
    dev = resolve_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise UserError("--precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    if dev.type == "cpu":
        torch.set_num_threads(threads or available_cores())
    return Runtime(dev, precision, channels_last, torch.get_num_threads())
