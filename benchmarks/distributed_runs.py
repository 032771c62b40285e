"""One process against torchrun on the same machine: the same recipe, the same global batch, several seeds —
does training across ranks lose accuracy, and what does it cost or gain in speed?

    .venv/bin/python benchmarks/distributed_runs.py [--recipes seed fast] [--seeds 0 1 2] [--remeasure]

Per recipe and seed, two runs, alternated so both see the same machine:
    one    `cifar10cnn train … --threads 2` (one process, both cores)
    ddp2   `torchrun --standalone --nproc-per-node 2 -m cifar10cnn train …` (2 ranks × 1 thread, gloo)
The recipes are shortened to fit a sitting (CASES: a stratified subset and fewer epochs; the schedules are laid
over those epochs), 5,000 validation images, the full test set once. Figures (with the median training
images/s of the epochs, from history.csv) are kept in benchmarks/results/distributed/RECIPE-MODE-seedS.json
with provenance; docs/distributed.md's table is generated from them (benchmarks/doc_tables.py). A finished run
folder or kept file made with the same settings on this CPU is reused; --remeasure trains again.
Timed figures: let nothing else run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

from kept_runs import check_kept, check_reusable, exit_code, save_result

RESULTS = Path("benchmarks/results/distributed")
CASES = {"seed": {"subset": 10_000, "epochs": 4}, "fast": {"subset": 5_000, "epochs": 3}}
MODES = {"one": 1, "ddp2": 2}  # mode → processes


def flags(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def command(mode: str, recipe: str, seed: int, out: Path) -> list[str]:
    train = ["train", "--recipe", recipe, "--seed", str(seed), *flags(CASES[recipe]), "--out", str(out)]
    if mode == "one":
        return [sys.executable, "-m", "cifar10cnn", *train, "--threads", "2"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(MODES[mode]),
            "-m", "cifar10cnn", *train]


def median_images_per_s(run_dir: Path) -> float:
    with open(run_dir / "history.csv", newline="") as f:
        return statistics.median(float(row["images_per_s"]) for row in csv.DictReader(f))


def one_run(recipe: str, seed: int, mode: str, runs: Path, results: Path, remeasure: bool) -> None:
    from cifar10cnn.config import RunConfig
    from cifar10cnn.fileio import read_json
    from cifar10cnn.provenance import cpu_name
    from cifar10cnn.runs import read_metrics

    name = f"{recipe}-{mode}-seed{seed}"
    result, out = results / f"{name}.json", runs / name
    requested = RunConfig.resolve(recipe, {**CASES[recipe], "seed": seed,
                                           **({"threads": 2} if mode == "one" else {})}).to_dict()
    if result.is_file() and not remeasure:
        kept = read_json(result, "kept result")
        check_kept(str(result), kept, requested)
        print(f"{name}: kept, not trained again", flush=True)
        return
    if remeasure or not (out / "metrics.json").is_file():
        print(f"{name}: {' '.join(command(mode, recipe, seed, out))}", flush=True)
        status = subprocess.call(command(mode, recipe, seed, out) + (["--overwrite"] if out.exists() else []))
        if status:
            raise SystemExit(f"{name} failed (exit {status})")
    check_reusable(str(out), read_json(out / "config.json", "run config")["config"], cpu_name(), requested)
    save_result(result, read_metrics(out), out, requested, recipe=recipe, seed=seed, mode=mode,
                processes=MODES[mode], train_images_per_s=median_images_per_s(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=Path("runs/distributed"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--remeasure", action="store_true", help="train again even if kept")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipes:
        for seed in args.seeds:
            for mode in MODES:  # alternated: both modes of a seed back to back
                one_run(recipe, seed, mode, args.runs, args.results, args.remeasure)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
