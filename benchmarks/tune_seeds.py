"""The tuning study's `--final` comparison over several seeds: the best trial's settings and the recipe's own,
each retrained on all 50,000 images with more seeds, kept with provenance; the docs' table and its Welch
test are generated from the kept file by benchmarks/doc_tables.py.

    .venv/bin/python benchmarks/tune_seeds.py STUDY_OUT [--seeds 0 1 2] [--threads N]

STUDY_OUT is the --out of `cifar10cnn tune ... --final` (it holds final-best/ and final-baseline/). Each
configuration is that run's config.json with only the seed changed, trained into STUDY_OUT/final-NAME-seedS
(seed 0 is the study's own final run when its settings match). Kept: benchmarks/results/tune/final_seeds.json
({"best": [...], "baseline": [...]}, one kept result per seed) and one file per run beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kept_runs import exit_code, kept_or_trained

RESULTS = Path("benchmarks/results/tune")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study_out", type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, help="CPU threads per run (default: the final runs' own setting)")
    ap.add_argument("--remeasure", action="store_true", help="train again even if kept")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()

    from cifar10cnn.config import load_run_config
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.fileio import atomic_write_json

    data = None
    kept: dict[str, list[dict]] = {}
    for name in ("best", "baseline"):
        base, _ = load_run_config(args.study_out / f"final-{name}")
        if args.threads:
            base = dataclasses.replace(base, threads=args.threads)
        for s in args.seeds:
            run_dir = args.study_out / (f"final-{name}" if s == base.seed else f"final-{name}-seed{s}")
            if data is None and not (run_dir / "metrics.json").is_file():
                data = load_cifar10()
            print(f"{name}, seed {s}:", flush=True)
            kept.setdefault(name, []).append(kept_or_trained(
                args.results / f"final-{name}-seed{s}.json", run_dir,
                lambda b=base, s=s: dataclasses.replace(b, seed=s), data, remeasure=args.remeasure, seed=s,
                settings_of=name))
    atomic_write_json(args.results / "final_seeds.json", kept)
    print(f"kept: {args.results / 'final_seeds.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
