"""What a `--time-budget` speed measurement costs, and what it reads: the rule of code 678f9eb against the current one,
alternated in one process on one machine.

    CIFAR10_DIR=... PYTHONPATH=src .venv/bin/python benchmarks/speed_measurement.py [--recipes fast fast-muon]
        [--repeats 2]

For each recipe, `budget.measure_speed` runs on a fresh model with each rule in turn (old, new, old, new, ...):
    the run's own measurement   code 678f9eb: warm-up on up to 3 batches of the recipe's size (≤ 2,048 images unless
                                one batch is more), then ~2,048–6,144 images timed; now (budget.calibration_images):
                                warm-up on batches of ≤ 128 images (on a CPU), then ~2,048–3,072 timed
    the recipe picker's probe   code 678f9eb: one warm-up batch of the recipe's size, then ≥ 1,024 images timed; now
                                one warm-up batch of ≤ 128 images, then the same
Each row gives the seconds the measurement took ("measure_s": warm-up, timed training, the evaluation pass) and the
training speed it read. Written to benchmarks/results/speed/speed-measurement.json with the provenance.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "speed" / "speed-measurement.json"


def old_rule(batch_size: int, n_train: int, probe_images: int | None = None, device_type: str = "cpu"
             ) -> tuple[int, int, int]:
    """budget.calibration_images as it was at code 678f9eb (it returned no warm-up batch size: the recipe's)."""
    def whole(images: int) -> int:
        return min(batch_size * max(1, round(images / batch_size)), n_train)

    if probe_images is not None:
        return batch_size, whole(batch_size), whole(probe_images)
    return (batch_size, whole(batch_size * max(1, min(3, 2048 // batch_size))),
            whole(max(2048, min(20 * batch_size, 6 * 1024))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["fast", "fast-muon"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.data.dataset import make_split
    from cifar10cnn.fileio import atomic_write_json
    from cifar10cnn.provenance import provenance
    from cifar10cnn.runtime import resolve_runtime
    from cifar10cnn.training import budget
    from cifar10cnn.training.parts import build_model, build_parts, resident_data
    from cifar10cnn.training.pick import PROBE_IMAGES

    rules = {"678f9eb": old_rule, "now": budget.calibration_images}
    data = load_cifar10()
    rows = []
    for recipe in args.recipes:
        cfg = RunConfig.resolve(recipe, {"time_budget": 10})
        runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
        split = make_split(data.train_y, cfg.val_size, cfg.split_seed, cfg.subset, len(data.classes), data.val_idx)
        for kind, probe_images in (("the run's own", None), ("the picker's probe", PROBE_IMAGES)):
            for _ in range(args.repeats):
                for code, rule in rules.items():
                    budget.calibration_images = rule  # measure_speed reads it from the module
                    model, _ = build_model(cfg, data, split, runtime)
                    parts = build_parts(cfg, model, runtime)
                    r = resident_data(cfg, data, split, runtime, model)
                    speed = budget.measure_speed(cfg, parts.step_model, parts.optimizer, runtime, r.train_x,
                                                 r.train_y, r.train_idx, len(r.val_y), len(data.test_y),
                                                 parts.augment, probe_images)
                    warm_bs, warm, timed = rule(cfg.batch_size, len(r.train_idx), probe_images, runtime.device.type)
                    row = {"recipe": recipe, "measurement": kind, "code": code, "warmup_batch_size": warm_bs,
                           "warmup_images": warm, "timed_images": timed, "measure_s": round(speed["measure_s"], 1),
                           "train_images_per_s": round(speed["train_images_per_s"], 1)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    budget.calibration_images = rules["now"]
    summary = []
    for recipe in args.recipes:
        for kind in ("the run's own", "the picker's probe"):
            line = {"recipe": recipe, "measurement": kind}
            for code in rules:
                mine = [r for r in rows if (r["recipe"], r["measurement"], r["code"]) == (recipe, kind, code)]
                line[f"measure_s_{code}"] = round(statistics.mean(r["measure_s"] for r in mine), 1)
                line[f"train_images_per_s_{code}"] = [r["train_images_per_s"] for r in mine]
            summary.append(line)
            print(f"{recipe:<10} {kind:<19} {line['measure_s_678f9eb']:>6.1f} s → {line['measure_s_now']:>5.1f} s; "
                  f"read {line['train_images_per_s_678f9eb']} → {line['train_images_per_s_now']} img/s")
    atomic_write_json(RESULT, {"command": "benchmarks/speed_measurement.py " + " ".join(
        ["--recipes", *args.recipes, "--repeats", str(args.repeats)]), "threads": runtime.threads,
        "precision": runtime.precision, "provenance": provenance(), "summary": summary, "rows": rows})
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
