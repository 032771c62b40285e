"""The model table: what each registered model buys for its cost on this machine.

    .venv/bin/python benchmarks/model_table.py [--models resnet20 mobilenetv2 ...] [--budget 20]

Per model: trainable parameters, forward MFLOPs per image, training images/s at batch 128 and evaluation
images/s at batch 500 (`cifar10cnn bench`'s code: 10 warm-up batches, then 10 timed ones; this sitting's
speed, printed and written to --table, not kept per model), and the test accuracy of `cifar10cnn train --recipe resnet
--model M --final --time-budget MINUTES` (the seed model with its own `seed-aug` recipe), one seed.
Every run is a normal run folder under --runs; its figures are also kept in --results (one JSON per
model, committed), and a model with kept figures or a finished run folder is not trained again, so the
table can be built over several sittings and machines (20 minutes per model). The table is written to
--table as markdown (atomically) after every model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kept_runs import exit_code, kept_or_trained

DEFAULT_MODELS = ["seed", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "mobilenetv2", "resnet18",
                  "preact_resnet18"]


def recipe_for(model: str) -> str:
    return "seed-aug" if model == "seed" else "resnet"


def measure_speed(data, model: str, batch_size: int) -> dict:
    from cifar10cnn.bench import bench
    from cifar10cnn.config import RunConfig

    cfg = RunConfig.resolve(recipe_for(model), {"model": model, "batch_size": batch_size})
    return bench(data, cfg, train_images=10 * batch_size, eval_images=2_000, warmup_images=10 * batch_size)


def result_file(results: Path, model: str, budget: float) -> Path:
    return results / f"{model}-budget{budget:g}.json"


def table_markdown(rows: list[dict], budget: float) -> str:
    lines = [
        f"| model | trainable params | forward MFLOPs / image | train img/s (batch 128) | eval img/s | recipe | "
        f"test accuracy after {budget:g} min (flip TTA / single view) | epochs | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        done = "test_accuracy" in r
        tta = f"{r['test_accuracy_tta']:.2%}" if r.get("test_accuracy_tta") is not None else "–"
        acc = f"{tta} / {r['test_accuracy']:.2%}" if done else "not run yet"
        wall = f"{r['wall_seconds'] / 60:.1f} min" if done else ""
        lines.append(
            f"| `{r['model']}` | {r['params']:,} | {r['mflops']:,.1f} | {r['train_ips']:,.0f} | {r['eval_ips']:,.0f} | "
            f"`{r['recipe']}` | {acc} | {r.get('epochs', '')} | {wall} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--budget", type=float, default=20.0, help="minutes per training run (default 20)")
    ap.add_argument("--runs", type=Path, default=Path("runs/model-table"))
    ap.add_argument("--table", type=Path, default=Path("benchmarks/results/model_table.md"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/model_table"),
                    help="one JSON of figures per finished model (committed; read instead of retraining)")
    ap.add_argument("--train", nargs="*", help="train only these models now (default: all of --models); the others "
                                               "show their finished runs from --runs, or 'not run yet'")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--remeasure", action="store_true", help="train the --train models again even if kept (a kept "
                                                             "figure is reused only with the same settings and CPU)")
    args = ap.parse_args()

    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.fileio import atomic_write_text
    from cifar10cnn.models import create_model, forward_flops, list_models, trainable_params
    unknown = [m for m in args.models + (args.train or []) if m not in list_models()]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; valid: {', '.join(list_models())}", file=sys.stderr)
        return 2
    data = load_cifar10()
    rows = []
    for name in args.models:
        net = create_model(name)
        speed = measure_speed(data, name, args.batch_size)
        row = {"model": name, "params": trainable_params(net), "mflops": forward_flops(net) / 1e6,
               "train_ips": speed["train_images_per_s"], "eval_ips": speed["eval_images_per_s"],
               "recipe": recipe_for(name)}
        print(f"{name}: {row['params']:,} params, {row['mflops']:,.1f} MFLOPs, train {row['train_ips']:,.0f} img/s, "
              f"eval {row['eval_ips']:,.0f} img/s", flush=True)
        out = args.runs / f"{name}-budget{args.budget:g}"
        metrics = kept_or_trained(
            result_file(args.results, name, args.budget), out,
            lambda name=name, recipe=row["recipe"]: RunConfig.resolve(
                recipe, {"model": name, "final": True, "time_budget": args.budget}),
            data, train_now=args.train is None or name in args.train,
            remeasure=args.remeasure and (args.train is None or name in args.train), model=name,
            budget_minutes=args.budget)
        if metrics is not None:
            row.update(test_accuracy=metrics["test_accuracy"], test_accuracy_tta=metrics.get("test_accuracy_tta"),
                       epochs=metrics["epochs"], wall_seconds=metrics["wall_seconds"])
        rows.append(row)
        atomic_write_text(args.table, table_markdown(rows, args.budget))
    print(table_markdown(rows, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
