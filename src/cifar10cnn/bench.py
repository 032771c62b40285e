"""Throughput measurement on real CIFAR-10 batches, through the same code paths as `train`/`evaluate`."""

from __future__ import annotations

import time

import torch

from .config import RunConfig
from .data.dataset import ImageDataset, channel_stats
from .errors import UserError
from .flops import attainable_gflops, model_flops
from .inference import predict_logits
from .models import build_classifier, trainable_params
from .runtime import resolve_runtime
from .training.loop import train_one_epoch
from .training.parts import build_parts


def bench(data: ImageDataset, cfg: RunConfig, train_images: int = 6_000, eval_images: int = 10_000,
          warmup_images: int = 1_000, flops: bool = False) -> dict:
    """Training and evaluation images/s after warm-up (optimizer steps included in training); with `flops`, also
    the model's FLOPs per image, the GFLOP/s they achieve and this device's attainable rate (flops.py).

    Training warms up on max(warmup_images, 10 batches) images — never fewer than 10 batches, so one-time
    costs (oneDNN kernel selection, torch.compile) are paid before timing — then times train_images.
    Evaluation warms up on 2 batches and times eval_images, at cfg.eval_batch_size (500 by default)."""
    if cfg.linear_probe:
        raise UserError("bench times whole-network training steps on images; a linear probe trains its head on "
                        "cached features (see the transfer-linear run's features_seconds and epoch times)")
    rt = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    mean, std = channel_stats(data.train_x[:5000])
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, mean, std, len(data.classes), **cfg.model_options)
    parts = build_parts(cfg, rt.place(model), rt)  # as `train` builds them: groups, optimizer, compile, augment
    model = parts.model
    x, y = data.train_x.to(rt.device), data.train_y.to(rt.device)
    g = torch.Generator().manual_seed(cfg.seed)

    def timed_train(n: int) -> float:
        order = torch.randperm(len(x), generator=g)[:n].to(rt.device)
        t0 = time.perf_counter()
        train_one_epoch(parts.step_model, parts.optimizer, x, y, order, rt, cfg.batch_size, parts.scaler,
                        augment=parts.augment, generator=g, label_smoothing=cfg.label_smoothing, ema=parts.ema)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed_train(max(warmup_images, 10 * cfg.batch_size))
    train_s = timed_train(train_images)
    test_x = data.test_x[:eval_images]
    predict_logits(model, test_x[: cfg.eval_batch_size * 2], rt, cfg.eval_batch_size)  # warm-up
    t0 = time.perf_counter()
    predict_logits(model, test_x, rt, cfg.eval_batch_size)
    eval_s = time.perf_counter() - t0
    rates = {"train_images_per_s": round(train_images / train_s, 1),
             "eval_images_per_s": round(len(test_x) / eval_s, 1)}
    return {
        "model": cfg.model,
        "trainable_params": trainable_params(model),
        "batch_size": cfg.batch_size,
        "eval_batch_size": cfg.eval_batch_size,
        "augmentation": parts.augment is not None,
        **rates,
        "train_images": train_images,
        "eval_images": len(test_x),
        **(flop_rates(model, rt, rates, cfg.image_size) if flops else {}),
        **{k: v for k, v in rt.describe().items() if k in ("device", "device_name", "precision", "channels_last",
                                                          "threads", "torch")},
    }


def flop_rates(model, rt, rates: dict, image_size: int) -> dict:
    """FLOPs per image (train step, eval pass), the GFLOP/s achieved at the measured images/s, and their fraction
    of this device's attainable rate in the run's precision (measured here, after the timed passes)."""
    per_image = model_flops(model, rt, image_size)
    peak = attainable_gflops(rt)
    train_g = per_image["train"] * rates["train_images_per_s"] / 1e9
    eval_g = per_image["eval"] * rates["eval_images_per_s"] / 1e9
    return {"train_gflops_per_image": round(per_image["train"] / 1e9, 4),
            "eval_gflops_per_image": round(per_image["eval"] / 1e9, 4),
            "train_gflops_per_s": round(train_g, 1), "eval_gflops_per_s": round(eval_g, 1),
            "attainable_gflops_per_s": peak, "train_fraction_of_peak": round(train_g / peak["peak"], 3),
            "eval_fraction_of_peak": round(eval_g / peak["peak"], 3)}
