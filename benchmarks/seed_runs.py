"""The seed model trained the seed's way over several seeds — what `make run SEED=s` trains — with its figures
kept, provenance included, for the README's headline and the per-class claim.

    .venv/bin/python benchmarks/seed_runs.py [--seeds 0 1 2] [--threads N] [--runs runs/make-run] [--note TEXT]

Each seed is `cifar10cnn train --seed S` (the `seed` recipe: 45,000 training images, 5,000 held out for early
stopping, the test set once) in RUNS/seedS; a finished folder made with the same settings is read, not trained
again. Figures (with per-class counts) are kept in benchmarks/results/make_run/seedS.json; the docs' tables
are generated from them by benchmarks/doc_tables.py. --note says how the runs shared the machine (it is kept:
training times of runs that shared the CPU are not speed figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kept_runs import exit_code, kept_or_trained

RESULTS = Path("benchmarks/results/make_run")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, help="CPU threads per run (default: all cores, as `make run`)")
    ap.add_argument("--runs", type=Path, default=Path("runs/make-run"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--note", default="one run at a time, nothing else on the CPU")
    ap.add_argument("--remeasure", action="store_true", help="train again even if kept")
    args = ap.parse_args()

    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.cifar import load_cifar10

    runtime = {"threads": args.threads} if args.threads else {}
    todo = [s for s in args.seeds if args.remeasure or not (args.runs / f"seed{s}" / "metrics.json").is_file()]
    data = load_cifar10() if todo else None
    for s in args.seeds:
        print(f"seed {s}:", flush=True)
        kept_or_trained(args.results / f"seed{s}.json", args.runs / f"seed{s}",
                        lambda s=s: RunConfig.resolve("seed", {"seed": s, **runtime}), data,
                        remeasure=args.remeasure, seed=s, note=args.note)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
