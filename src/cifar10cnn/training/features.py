"""Frozen-backbone features, computed once and cached: what a linear probe (`--recipe transfer-linear`)
trains its head on.

A pass of a pretrained backbone over 50,000 upscaled images is the expensive part of a linear probe
(minutes on a CPU); the head itself trains on the cached N×D features in seconds. The cache file is
named by a hash of everything the features depend on — the backbone's weights and input scaling,
the model options (resolution), the precision and the images — so a changed input never reuses
stale features, and a rerun (another seed, lr or weight decay for the head) reuses them.

    <cache dir>/features/<model>-<hash>.npy     float32, one row per training image (data order)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_write
from ..inference import to_batch
from ..models import ModelContract
from ..progress import console, image_progress
from ..runtime import Runtime


def _fingerprint(net: ModelContract, images: torch.Tensor, extra: dict) -> str:
    """Hash of the backbone (every weight but the declared head's, which features do not depend on), images
    and `extra`."""
    head = net.get_classifier()
    head_name = next(name for name, m in net.named_modules() if m is head)
    h = hashlib.sha1(json.dumps(extra, sort_keys=True).encode())
    for name, tensor in sorted(net.state_dict().items()):
        if name.startswith(f"{head_name}."):
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def backbone_features(model: nn.Module, images: torch.Tensor, runtime: Runtime, batch_size: int = 250,
                      desc: str = "features") -> torch.Tensor:
    """N×32×32×3 uint8 images → N×D float32 features (the network's declared `forward_features`, after
    normalisation), eval mode."""
    model.eval()
    out = []
    with image_progress(desc, len(images)) as advance:
        for start in range(0, len(images), batch_size):
            x = to_batch(images[start:start + batch_size], runtime)
            with runtime.autocast():
                out.append(model.net.forward_features(model.normalize(x)).float().cpu())
            advance(len(x))
    return torch.cat(out)


def features_for(model: nn.Module, images: torch.Tensor, needed: torch.Tensor, runtime: Runtime, cache_dir: Path,
                 model_name: str, model_options: dict) -> torch.Tensor:
    """A len(images)×D tensor holding the (cached) features of `images[needed]` in those rows, zeros elsewhere,
    so that the training loop indexes features exactly as it indexes images."""
    needed = needed.sort().values
    feats = cached_features(model, images[needed], runtime, cache_dir, model_name, model_options)
    out = torch.zeros(len(images), feats.shape[1])
    out[needed] = feats
    return out


def cached_features(model: nn.Module, images: torch.Tensor, runtime: Runtime, cache_dir: Path,
                    model_name: str, model_options: dict) -> torch.Tensor:
    """Features of `images` from the cache, or computed (with a progress bar) and cached atomically."""
    key = _fingerprint(model.net, images, {"model": model_name, "options": model_options,
                                           "precision": runtime.precision, "device": runtime.device.type,
                                           "scaling": [model.normalize.scale.tolist(), model.normalize.shift.tolist()]})
    path = Path(cache_dir) / "features" / f"{model_name}-{key}.npy"
    if path.is_file():
        try:
            feats = torch.from_numpy(np.load(path, allow_pickle=False))
            if len(feats) == len(images):
                console.print(f"features: {len(feats):,} × {feats.shape[1]} from the cache {path}")
                return feats
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed
    feats = backbone_features(model, images, runtime, desc="backbone features (cached for next time)")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, feats.numpy(), allow_pickle=False)

    atomic_write(path, write)
    return feats
