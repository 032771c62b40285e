"""Weights as safetensors: nothing is ever unpickled.

model.safetensors   the weights (incl. normalisation buffers) + metadata: model name, model options,
                    class names, normalisation. Readable by any safetensors tool.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .errors import UserError
from .fileio import atomic_write

FORMAT = "cifar10cnn/1"


def cpu_tensors(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_weights(path: Path, model: nn.Module, meta: dict) -> None:
    """Write `model.state_dict()` with string metadata (values JSON-encoded)."""
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    tensors = cpu_tensors(model.state_dict())
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def open_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is truncated or not a safetensors file ({str(e).splitlines()[0]})") from None
    if raw_meta.get("format") != FORMAT:
        raise UserError(f"{path} was not written by cifar10cnn (no '{FORMAT}' format tag)")
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} has damaged metadata ({e})") from None
    return tensors, meta


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a weights file; clear errors for missing, truncated or foreign files."""
    return open_safetensors(path, "weights file (model.safetensors)")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict, naming the mismatch when the file belongs to another architecture."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise UserError(f"weights in {path} do not fit the model ({detail})")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise UserError(f"weights in {path} hold NaN or infinite values ({', '.join(bad[:3])}"
                        f"{' …' if len(bad) > 3 else ''}): the run diverged or the file is damaged")
    model.load_state_dict(state)


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
