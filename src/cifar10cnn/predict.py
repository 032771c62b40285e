"""Classify image files with a trained run: decode → 32×32 uint8 → the run's model, in batches.

The model is applied exactly as in `evaluate` (`predict_logits`: same normalisation inside the
model, same precision); decoding is the only per-image step and happens outside the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.images import ImageError, decode_image
from .inference import predict_logits
from .runs import image_size, load_run_model


@dataclass
class Prediction:
    path: Path
    top_k: list[tuple[str, float]]  # (class, probability), most likely first
    error: str | None = None


def predict_files(run_dir: Path, items: list[tuple[Path, str | None]], top_k: int = 3, tta: bool = False,
                  batch_size: int = 500, on_image=None) -> Iterator[Prediction]:
    """Yield one Prediction per item of `expand_paths(...)`, in order; unreadable ones carry `error`."""
    model, meta, runtime = load_run_model(run_dir)
    classes, size = meta["classes"], image_size(meta)
    k = min(top_k, len(classes))
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        good: list[tuple[int, np.ndarray]] = []
        results: list[Prediction | None] = []
        for i, (path, reason) in enumerate(chunk):
            if reason is None:
                try:
                    good.append((i, decode_image(path, size=size)))
                    results.append(None)
                    continue
                except ImageError as e:
                    reason = str(e)
            results.append(Prediction(path, [], reason))
        if good:
            images = torch.from_numpy(np.stack([a for _, a in good]))
            probs = predict_logits(model, images, runtime, batch_size, tta=tta).softmax(1)
            # a stable sort breaks ties (frequent with bf16 logits) towards the lower class index, as
            # argmax in `evaluate` does, so both always name the same top-1 class
            p, idx = (t[:, :k] for t in probs.sort(dim=1, descending=True, stable=True))
            for (i, _), pi, ii in zip(good, p.tolist(), idx.tolist(), strict=True):
                results[i] = Prediction(chunk[i][0], [(classes[c], q) for c, q in zip(ii, pi, strict=True)])
        if on_image is not None:
            on_image(len(chunk))
        yield from results
