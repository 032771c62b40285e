"""What batched augmentation costs per epoch, against the training it feeds.

    .venv/bin/python benchmarks/augment_cost.py [--recipe seed-aug] [--repeats 3]

Times the recipe's augmentation alone over one epoch of batches (45,000 images, the batch size of the
recipe), for the fused one-gather `crop_flip` that training uses and for the readable two-step
definition (pad + index, then flip), and a training pass over 6,000 images without augmentation
(`cifar10cnn bench`'s code). Whole-training A/B comparisons on this machine move by ±5% between runs,
more than the effect, so the cost is measured directly: augmentation seconds / training seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="seed-aug")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from cifar10cnn.bench import bench
    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.augment import Augment, flip, random_crop
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.inference import to_batch
    from cifar10cnn.runtime import resolve_runtime

    data = load_cifar10()
    cfg = RunConfig.resolve(args.recipe)
    rt = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    aug = Augment(cfg.crop_padding, cfg.pad_mode, cfg.flip, cfg.cutout, seed=cfg.seed)
    n, bs = 45_000, cfg.batch_size
    x = data.train_x[:n].to(rt.device)

    def two_step(batch, idx, epoch, g):
        return flip(random_crop(batch, aug.crop_padding, aug.pad_mode, g), aug.flip, g, idx, epoch, aug.seed)

    def epoch_seconds(fn) -> float:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = torch.arange(start, min(start + bs, n))
            fn(to_batch(x[idx], rt), idx, 1, g)
        return time.perf_counter() - t0

    plain = RunConfig.resolve(args.recipe, {"crop_padding": 0, "flip": "none", "cutout": 0})
    fused, reference, train_s = [], [], []
    for _ in range(args.repeats):
        fused.append(epoch_seconds(aug))
        reference.append(epoch_seconds(two_step))
        r = bench(data, plain, train_images=6_000, eval_images=500)
        train_s.append(n / r["train_images_per_s"])
    f, ref, t = statistics.median(fused), statistics.median(reference), statistics.median(train_s)
    print(f"recipe {args.recipe}: crop {aug.crop_padding} ({aug.pad_mode}), flip {aug.flip}, cutout {aug.cutout}, "
          f"batch {bs}, {rt.precision} on {rt.device}, {rt.threads} threads; medians of {args.repeats}")
    print(f"training without augmentation: {t:.1f} s per epoch of {n:,} images ({n / t:,.0f} img/s)")
    print(f"augmentation, fused crop_flip: {f:.2f} s per epoch = {f / t:.1%} of training")
    print(f"augmentation, pad + index then flip: {ref:.2f} s per epoch = {ref / t:.1%} of training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
