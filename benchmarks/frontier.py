"""The accuracy-per-CPU-minute frontier: which recipe to train for a given number of minutes, measured.

    .venv/bin/python benchmarks/frontier.py --steps STEP... [--seeds 0 1] [--minutes 1 2 5] [--remeasure]

1. `muon-val`: `fast` (SGD + Lookahead, 10 epochs, batch 1,024) against `fast-muon` (airbench94_muon's Muon for
   the filters, 8 epochs, batch 2,000) on the validation split — the choice is made there, never on the test
   set — shortened to fit a sitting on a 2-core CPU (CASE: a stratified subset of the training split, the
   recipe's own epochs, the single-view figures: the 6-view TTA alone takes ~3 min per run). Alternated per seed.
2. `budget`: `train --recipe R --time-budget M` for R in --recipes and M in --minutes (one seed: the default 0).
3. `auto`: `train --time-budget M` without --recipe, for M in --minutes: the recipe the program picks here.
4. `curves`: src/cifar10cnn/frontier.json, the measured accuracy-vs-epochs curves `--time-budget` without
   `--recipe` picks from: every kept `--time-budget` run of a candidate recipe on CIFAR-10 (its epochs run and
   its test accuracy with its TTA; several runs at the same epochs are averaged), on any CPU (the epochs are
   machine-independent; the minutes are not).
5. `final`: `train --recipe R --final --seed S` for R in --recipes (default fast-muon) and S in --seeds (the
   issue's figure: the whole recipe on all 50,000 training images, its TTA test once per run, 3 seeds), kept as
   final-R-seedS.json.
6. `flops`: `cifar10cnn bench --flops` of the seed model (batch 32 and 128) and of `fast`, `fast-muon`, `fast95` and
   `fast96` (their batch sizes; --recipes: only these): achieved GFLOP/s against this CPU's attainable matmul/conv
   rate, kept in flops.jsonl.
7. `plot`: docs/frontier-CPU.png for each CPU class's folder: test accuracy (TTA) against wall minutes of its
   current kept `budget` and `auto` runs (CURRENT: not the earlier runs a rerun replaced), one line per recipe, the
   auto-picked runs as points.
Figures are kept with provenance (kept_runs.py) in benchmarks/results/frontier/CPU/, one folder per CPU class
(provenance.cpu_class: model name and instruction sets, e.g. amd-epyc-avx512-bf16): a file is named by recipe and
minutes or seed only, so another CPU's run of the same name never replaces it. flops.jsonl (rows, each with its CPU)
is shared. docs/frontier.md's tables are generated from them (benchmarks/doc_tables.py). Timed figures: let nothing
else run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from kept_runs import exit_code, keep_cli_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results/frontier")
FRONTIER_JSON = Path("src/cifar10cnn/frontier.json")
CASE = {"subset": 10_000, "tta": False, "tta_translate": 0}  # the shortened validation comparison
MUON_VAL_RECIPES = ("fast", "fast-muon")
# what `--time-budget` picks from (a measured curve each; `fast95` is probed only when it could win: pick.py)
CANDIDATES = ("seed-aug", "resnet", "fast", "fast-muon", "fast95")
# `--time-budget` runs kept before results recorded their settings (benchmarks/results/legacy.json names the
# commit of each): their recipe, from the page that published them
LEGACY_BUDGET_RUNS = {"fast/budget-5min.json": "fast", "fast/budget-10min.json": "fast",
                      "model_table/seed-budget20.json": "seed-aug", "model_table/resnet20-budget20.json": "resnet"}
# the names the budget and auto steps write in a CPU class's folder: the current run of each (recipe, minutes) on
# that class of CPU. An earlier run is renamed with a suffix (budget-resnet-5min-whole-epochs.json) when a rerun
# replaces it: the tables show it, the plot not
CURRENT = re.compile(r"(budget-[a-z0-9-]+?|auto)-[0-9.]+min\.json")
# `bench --flops` cases: (recipe, batch size; None: the recipe's own)
BENCH_CASES = (("seed", 32), ("seed", 128), ("fast", None), ("fast-muon", None), ("fast95", None), ("fast96", None))


def budget_runs(results: Path) -> list[tuple[str, str, dict]]:
    """(kept file, recipe, figures) of every kept `--time-budget` run of a candidate recipe on CIFAR-10 images
    (the batches, or the same pixels as a PNG tree: benchmarks/folder_datasets.py proves them identical)."""
    runs = [(name, recipe, json.loads((results / name).read_text())) for name, recipe in LEGACY_BUDGET_RUNS.items()]
    for path in sorted(results.rglob("*.json")):
        kept = json.loads(path.read_text())
        s = kept.get("settings") if isinstance(kept, dict) else None
        if not s or not s.get("time_budget") or s.get("final") or s.get("subset") or s.get("recipe") not in CANDIDATES:
            continue
        if s.get("dataset", "cifar10") != "cifar10" and not path.name.startswith("fast-png"):
            continue
        runs.append((str(path.relative_to(results)), s["recipe"], kept))
    return runs


def epochs_ran(kept: dict) -> int | float:
    """The epochs a kept budget run ran: 8.5 when the last ended half-way (`epochs` counts it as one)."""
    return (kept.get("budget") or {}).get("epochs_run", kept["epochs"])


def curves(results: Path) -> dict:
    points: dict[tuple[str, float], list] = {}
    for name, recipe, kept in budget_runs(results):
        if kept.get("test_accuracy_tta") is not None:
            points.setdefault((recipe, epochs_ran(kept)), []).append((kept["test_accuracy_tta"], name))
    recipes: dict[str, dict] = {r: {"points": []} for r in CANDIDATES}
    for (recipe, epochs), runs in sorted(points.items()):
        recipes[recipe]["points"].append({
            "epochs": epochs, "test_accuracy_tta": round(sum(a for a, _ in runs) / len(runs), 4), "runs": len(runs),
            "sources": [f"benchmarks/results/{n}" for _, n in runs]})
    return {"about": "the test accuracy (with each recipe's TTA views) of kept `--time-budget` runs on CIFAR-10 "
                     "after the epochs they ran, per recipe: what `train --time-budget` without --recipe picks "
                     "from (training/pick.py). Generated by `benchmarks/frontier.py --steps curves`; do not edit.",
            "recipes": {r: v for r, v in recipes.items() if v["points"]}}


def bench_flops(out: Path, recipes: list[str] | None) -> None:
    """Appends a row per case of BENCH_CASES (only those of `recipes` when given)."""
    from cifar10cnn.provenance import provenance

    with out.open("a") as f:
        for recipe, batch in BENCH_CASES:
            if recipes and recipe not in recipes:
                continue
            cmd = [sys.executable, "-m", "cifar10cnn", "bench", "--recipe", recipe, "--flops", "--json",
                   *(["--batch-size", str(batch)] if batch else []),
                   "--train-images", str(max(2048, 2 * (batch or 2048)))]
            print("$", " ".join(cmd), flush=True)
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            r.update(recipe=recipe, provenance={**provenance(), "command": " ".join(cmd[1:])})
            print(json.dumps(r), flush=True)
            f.write(json.dumps(r) + "\n")


def plot(folder: Path, out: Path) -> None:
    """The frontier of one CPU class (its folder of kept runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    lines: dict[str, list] = {}
    budget = [json.loads(p.read_text()) for p in sorted(folder.glob("budget-*.json")) if CURRENT.fullmatch(p.name)]
    for kept in budget:
        lines.setdefault(kept["recipe"], []).append((kept["wall_seconds"] / 60, kept["test_accuracy_tta"]))
    for recipe, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([m for m, _ in pts], [a * 100 for _, a in pts], marker="o", label=recipe)
    auto = [json.loads(p.read_text()) for p in sorted(folder.glob("auto-*.json")) if CURRENT.fullmatch(p.name)]
    if auto:
        ax.scatter([k["wall_seconds"] / 60 for k in auto], [k["test_accuracy_tta"] * 100 for k in auto], marker="*",
                   s=220, color="black", zorder=5, label="--time-budget, recipe auto-picked")
        for i, k in enumerate(sorted(auto, key=lambda k: k["wall_seconds"])):  # alternate: close stars, apart labels
            ax.annotate(f"{k['minutes']:g} min → {k['recipe']}", (k["wall_seconds"] / 60, k["test_accuracy_tta"] * 100),
                        textcoords="offset points", xytext=(10, -12) if i % 2 == 0 else (10, 4), fontsize=7)
    ax.set_xlabel("wall minutes of the whole run (`train --time-budget M`)")
    ax.set_ylabel("test accuracy with the recipe's TTA (%)")
    prov = (budget + auto)[0]["provenance"]
    features = prov.get("machine_cpu_features")
    ax.set_title(f"accuracy per CPU minute on {prov['machine_cpu']}{f' ({features})' if features else ''}, "
                 f"{prov['threads']} threads, {prov['precision']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> int:
    from cifar10cnn.config import RunConfig
    from cifar10cnn.fileio import atomic_write_text
    from cifar10cnn.provenance import cpu_class, cpu_features, cpu_name

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/frontier"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--recipes", nargs="+", help=f"budget: these recipes (default {' '.join(CANDIDATES)}); "
                                                 "final: these (default fast-muon); flops: only these of its cases")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5])
    p.add_argument("--steps", nargs="+", required=True,
                   choices=["muon-val", "budget", "auto", "final", "curves", "flops", "plot"])
    p.add_argument("--remeasure", action="store_true")
    args = p.parse_args()
    here = RESULTS / cpu_class(cpu_name(), cpu_features())  # this CPU class's kept runs
    here.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds if "muon-val" in args.steps else []:
        for recipe in MUON_VAL_RECIPES:
            flags = ["--recipe", recipe, "--seed", str(seed), "--subset", str(CASE["subset"]),
                     "--set", "tta=false", "--set", "tta_translate=0"]
            requested = RunConfig.resolve(recipe, {**CASE, "seed": seed}).to_dict()
            keep_cli_run(f"val-{recipe}-seed{seed}", flags, requested, here, args.runs, args.remeasure,
                         recipe=recipe, seed=seed)
    for minutes in args.minutes if "budget" in args.steps else []:
        for recipe in args.recipes or CANDIDATES:
            requested = RunConfig.resolve(recipe, {"time_budget": minutes}).to_dict()
            keep_cli_run(f"budget-{recipe}-{minutes:g}min", ["--recipe", recipe, "--time-budget", f"{minutes:g}"],
                         requested, here, args.runs, args.remeasure, recipe=recipe, minutes=minutes)
    for seed in args.seeds if "final" in args.steps else []:
        for recipe in args.recipes or ["fast-muon"]:
            requested = RunConfig.resolve(recipe, {"final": True, "seed": seed}).to_dict()
            keep_cli_run(f"final-{recipe}-seed{seed}", ["--recipe", recipe, "--final", "--seed", str(seed)],
                         requested, here, args.runs, args.remeasure, recipe=recipe, seed=seed)
    for minutes in args.minutes if "auto" in args.steps else []:
        name = f"auto-{minutes:g}min"
        kept = keep_cli_run(name, ["--time-budget", f"{minutes:g}"], None, here, args.runs, args.remeasure,
                            minutes=minutes)
        pick = json.loads((args.runs / name / "recipe_pick.json").read_text()) if "recipe" not in kept else None
        if pick is not None:  # the recipe it picked, and why, beside the figures
            from cifar10cnn.fileio import atomic_write_json

            kept.update(recipe=pick["recipe"], pick=pick)
            atomic_write_json(here / f"{name}.json", kept)
    if "curves" in args.steps:
        atomic_write_text(FRONTIER_JSON, json.dumps(curves(Path("benchmarks/results")), indent=1) + "\n")
        print(f"wrote {FRONTIER_JSON}")
    if "flops" in args.steps:
        bench_flops(RESULTS / "flops.jsonl", args.recipes)
    if "plot" in args.steps:  # every CPU class's: a plot is drawn from its kept files, on any machine
        for folder in sorted(f for f in RESULTS.iterdir() if f.is_dir()):
            if any(CURRENT.fullmatch(p.name) for p in folder.glob("*.json")):
                plot(folder, ROOT / "docs" / f"frontier-{folder.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
