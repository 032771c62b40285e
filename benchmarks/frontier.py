"""The accuracy-per-CPU-minute frontier: which recipe to train for a given number of minutes, measured.

    .venv/bin/python benchmarks/frontier.py [--steps muon-val] [--seeds 0 1] [--remeasure]

1. `muon-val`: `fast` (SGD + Lookahead, 10 epochs, batch 1,024) against `fast-muon` (airbench94_muon's Muon for
   the filters, 8 epochs, batch 2,000) on the validation split — the choice is made there, never on the test
   set — shortened to fit a sitting on a 2-core CPU (CASE: a stratified subset of the training split, the
   recipe's own epochs, the single-view figures: the 6-view TTA alone takes ~3 min per run). Alternated per seed.
Figures are kept in benchmarks/results/frontier/*.json with provenance (kept_runs.py); docs/frontier.md's tables
are generated from them (benchmarks/doc_tables.py). Timed figures: let nothing else run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kept_runs import exit_code, keep_cli_run

RESULTS = Path("benchmarks/results/frontier")
CASE = {"subset": 10_000, "tta": False, "tta_translate": 0}  # the shortened validation comparison
MUON_VAL_RECIPES = ("fast", "fast-muon")


def main() -> int:
    from cifar10cnn.config import RunConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/frontier"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", nargs="+", default=["muon-val"], choices=["muon-val"])
    p.add_argument("--remeasure", action="store_true")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds if "muon-val" in args.steps else []:
        for recipe in MUON_VAL_RECIPES:
            flags = ["--recipe", recipe, "--seed", str(seed), "--subset", str(CASE["subset"]),
                     "--set", "tta=false", "--set", "tta_translate=0"]
            requested = RunConfig.resolve(recipe, {**CASE, "seed": seed}).to_dict()
            keep_cli_run(f"val-{recipe}-seed{seed}", flags, requested, RESULTS, args.runs, args.remeasure,
                         recipe=recipe, seed=seed)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
