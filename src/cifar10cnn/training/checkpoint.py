"""Resumable state as safetensors: model + optimizer tensors (+ extra modules such as the weight average), and
the loop state (a `TrainState`, as JSON) in the metadata. Written atomically at the end of every epoch:

checkpoint/last.safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError
from ..fileio import atomic_write
from ..weights import FORMAT, cpu_tensors, load_into, open_safetensors


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loop_state: dict,
                    extra: dict[str, nn.Module] | None = None) -> None:
    """`extra` modules (e.g. the weight average) are saved under their name as a prefix."""
    opt = optimizer.state_dict()
    tensors = cpu_tensors(model.state_dict(), "model.")
    for name, module in (extra or {}).items():
        tensors.update(cpu_tensors(module.state_dict(), f"{name}."))
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
    """Restore model, optimizer and `extra` modules in place; return the loop state saved with them.
    A damaged or foreign checkpoint is one UserError naming it."""
    tensors, meta = open_safetensors(path, "checkpoint")
    try:
        return _restore(path, tensors, meta, model, optimizer, extra)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UserError(f"checkpoint {path} is damaged ({type(e).__name__}: {e}); start again with --overwrite"
                        ) from None


def _restore(path: Path, tensors: dict, meta: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict[str, nn.Module] | None) -> dict:
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
    if not isinstance(meta["loop"], dict):
        raise ValueError("the loop state is not a JSON object")
    return meta["loop"]
