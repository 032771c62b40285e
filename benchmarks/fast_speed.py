"""Where the `fast` recipe's time goes on this machine, and which precision / memory format / compile to use.

    .venv/bin/python benchmarks/fast_speed.py [--images 6144] [--no-compile] [--profile-steps 3]

1. Training images/s of the `fast` recipe (batch 1024, its augmentation, the optimizer step) for bf16
   autocast and fp32, channels_last and NCHW, with and without torch.compile (its compile time is
   reported: it is paid once per run), through `cifar10cnn bench`'s code; evaluation images/s too.
2. torch.profiler over a few training steps of the recipe's settings: the operators that take the time.
Writes benchmarks/results/fast_speed.md. Run it alone on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=6 * 1024, help="timed training images per setting")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fast_speed.md"))
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from cifar10cnn.bench import bench
    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.data.dataset import channel_stats
    from cifar10cnn.fileio import atomic_write_text
    from cifar10cnn.models import build_classifier
    from cifar10cnn.provenance import provenance
    from cifar10cnn.runtime import resolve_runtime
    from cifar10cnn.training.loop import train_one_epoch
    from cifar10cnn.training.parts import build_parts

    data = load_cifar10()
    settings = [(p, cl, False) for p in ("bf16", "fp32") for cl in (True, False)]
    if not args.no_compile:
        settings += [("bf16", True, True), ("fp32", True, True)]
    lines = ["# Where the `fast` recipe's time goes", "",
             f"`.venv/bin/python benchmarks/fast_speed.py` — batch 1024, the recipe's augmentation, "
             f"{args.images:,} timed training images after 10 warm-up batches (eval: 5,000 images at batch 500); "
             f"torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.", "",
             "| precision | memory format | torch.compile | train img/s | eval img/s | warm-up s (10 batches, any "
             "compiling included, model set-up) |",
             "|---|---|---|---|---|---|"]
    for precision, channels_last, compiled in settings:
        cfg = RunConfig.resolve("fast", {"precision": precision, "channels_last": channels_last,
                                         "compile": compiled})
        t0 = time.perf_counter()
        r = bench(data, cfg, train_images=args.images, eval_images=5_000, warmup_images=10 * 1024)
        total = time.perf_counter() - t0
        warm = total - args.images / r["train_images_per_s"] - 5_000 / r["eval_images_per_s"]
        row = (f"| {precision} | {'channels_last' if channels_last else 'NCHW'} | {'yes' if compiled else 'no'} | "
               f"{r['train_images_per_s']:,.0f} | {r['eval_images_per_s']:,.0f} | {warm:.0f} |")
        print(row, flush=True)
        lines.append(row)

    # the profile of the recipe's own settings
    cfg = RunConfig.resolve("fast")
    rt = resolve_runtime("cpu", cfg.precision, cfg.channels_last)
    parts = build_parts(cfg, rt.place(build_classifier("fast", *channel_stats(data.train_x[:5000]), 10)), rt)
    model, opt, augment = parts.step_model, parts.optimizer, parts.augment  # as `train` builds them
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train_x), generator=g)[: cfg.batch_size * args.profile_steps]
    kwargs = {"augment": augment, "generator": g, "label_smoothing": cfg.label_smoothing}
    train_one_epoch(model, opt, data.train_x, data.train_y, order[: 2 * cfg.batch_size], rt, cfg.batch_size, **kwargs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch(model, opt, data.train_x, data.train_y, order, rt, cfg.batch_size, **kwargs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines += ["", f"## torch.profiler: {args.profile_steps} training steps of the recipe ({rt.precision}, "
              f"{'channels_last' if cfg.channels_last else 'NCHW'})", "",
              "| operator | self CPU time | share | calls |", "|---|---|---|---|"]
    for e in events[:15]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e3:,.0f} ms | {e.self_cpu_time_total / total:.1%} | "
                     f"{e.count} |")
    prov = provenance()
    code = prov["code"]
    lines += ["", f"Measured by `{' '.join(sys.argv)}` on {prov['cpu']} ({torch.get_num_threads()} threads), torch "
              f"{prov['torch']}, code {code['commit']}{' + uncommitted changes' if code['dirty'] else ''}, "
              f"{datetime.now(UTC).isoformat(timespec='seconds')}."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
