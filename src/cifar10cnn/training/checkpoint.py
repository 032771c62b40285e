"""Weights and resumable state as safetensors: nothing is ever unpickled.

model.safetensors        the weights (incl. normalisation buffers) + metadata: model name,
                         model options, class names. Readable by any safetensors tool.
checkpoint/last.safetensors
                         model + optimizer tensors, plus the loop state (epoch, early-stopping
                         counters, history) as JSON in the metadata. Written atomically each epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import UserError
from ..fileio import atomic_write

FORMAT = "cifar10cnn/1"


def _tensors(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_weights(path: Path, model: nn.Module, meta: dict) -> None:
    """Write `model.state_dict()` with string metadata (values JSON-encoded)."""
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    tensors = _tensors(model.state_dict())
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _open(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict]:
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
    except json.JSONDecodeError as e:
        raise UserError(f"{path} has damaged metadata ({e})") from None
    return tensors, meta


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a weights file; clear errors for missing, truncated or foreign files."""
    return _open(path, "weights file (model.safetensors)")


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
    model.load_state_dict(state)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loop_state: dict,
                    extra: dict[str, nn.Module] | None = None) -> None:
    """`extra` modules (e.g. the weight average) are saved under their name as a prefix."""
    opt = optimizer.state_dict()
    tensors = _tensors(model.state_dict(), "model.")
    for name, module in (extra or {}).items():
        tensors.update(_tensors(module.state_dict(), f"{name}."))
    scalars: dict[str, dict] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    metadata = {
        "format": FORMAT,
        "loop": json.dumps(loop_state),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, nn.Module] | None = None) -> dict:
    """Restore model, optimizer and `extra` modules in place; return the loop state saved with them."""
    tensors, meta = _open(path, "checkpoint")
    for name, module in {"model": model, **(extra or {})}.items():
        prefix = f"{name}."
        load_into(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, path)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("optim_scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta.get("param_groups", [])]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not fit this optimizer ({e})") from None
    # Optimizer moments must share their parameter's memory format (channels_last): the fused CPU
    # Adam kernel walks parameter, gradient and moments as flat memory. safetensors stores them
    # contiguous, so lay them out again like the parameter.
    for p, entry in optimizer.state.items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                entry[key] = torch.empty_like(p).copy_(value)
    return meta["loop"]
