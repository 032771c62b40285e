"""Grad-CAM: where the network looked, from the gradient of a class score at the last conv layer.

Selvaraju et al. 2017: weights = spatial mean of d(score)/d(activation) per channel;
map = ReLU(Σ_c weight_c · activation_c), upsampled to the input size and scaled to 0–1.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Maps (N×32×32, 0–1) for uint8 images N×3×32×32; `target` classes default to the predictions.

    `layer` defaults to the layer the classifier's network declares (`cam_layer()`, models/contract.py).
    Runs in fp32 on the model's device, in eval mode; the model is left unchanged.
    """
    layer = layer if layer is not None else model.net.cam_layer()
    saved: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        out.retain_grad()
        saved["act"] = out

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.enable_grad():
            logits = model(images.to(device))
            target = logits.argmax(1) if target is None else target.to(device)
            score = logits.gather(1, target[:, None]).sum()
            model.zero_grad(set_to_none=True)
            score.backward()
        act, grad = saved["act"].detach(), saved["act"].grad.detach()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam -= cam.amin(dim=(1, 2), keepdim=True)
    return (cam / cam.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)).cpu()


def overlay_png(image: np.ndarray, cam: np.ndarray, size: int = 128, alpha: float = 0.45) -> bytes:
    """PNG of a 32×32×3 uint8 image (upscaled without smoothing) with its Grad-CAM map in 'jet' on top."""
    from matplotlib import colormaps
    from PIL import Image

    big = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST), dtype=np.float32)
    heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    colour = colormaps["jet"](heat / 255.0)[..., :3] * 255.0
    blend = ((1 - alpha) * big + alpha * colour).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blend).save(buf, format="PNG")
    return buf.getvalue()
