"""The `fast` recipe's figures on this machine: 3 seeds of the full recipe, time budgets, and its switches.

    .venv/bin/python benchmarks/fast_recipe.py final [--seeds 0 1 2] [--epochs E]
        `cifar10cnn train --recipe fast --final --seed S` per seed: test accuracy (multi-crop TTA and
        single view), wall time, mean ± std; with --epochs, the recipe shortened to E epochs (`--set epochs=E`)
    .venv/bin/python benchmarks/fast_recipe.py budget [--minutes 5 10]
        `cifar10cnn train --recipe fast --final --time-budget M`, seed 0
    .venv/bin/python benchmarks/fast_recipe.py switches [--minutes 5] [--only NAME ...]
        the recipe with each trick turned off (recipes.FAST_SWITCHES), one seed each, all under the same
        `--time-budget`, against the full recipe under that budget

Every run is a run folder under --runs (default runs/fast); its figures are kept in
benchmarks/results/fast/*.json (committed) and not trained again. The tables are written to
benchmarks/results/fast.md after every run. Run one measurement at a time, with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from kept_runs import exit_code, kept_or_trained

RESULTS = Path("benchmarks/results/fast")


def _pct(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2%}" if values else "–"
    return f"{statistics.fmean(values):.2%} ± {statistics.stdev(values):.2%} (n={len(values)})"


def _kept(results: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob(pattern))]


def _table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def _accuracy_cells(r: dict) -> list[str]:
    return [f"{r['test_accuracy_tta']:.2%}", f"{r['test_accuracy']:.2%}"]


def final_table(results: Path, epochs: int | None = None) -> str:
    """The recipe as it is (epochs None), or shortened to `epochs` (the switch table's reference)."""
    rows = sorted(_kept(results, f"final-{epochs}ep-seed*.json" if epochs else "final-seed*.json"),
                  key=lambda r: r["seed"])
    if not rows:
        return ""
    cells = [[r["seed"], *_accuracy_cells(r), r["epochs"], f"{r['train_seconds']:.0f}",
              f"{r['wall_seconds'] / 60:.1f} min"] for r in rows]
    cells.append(["**mean ± std**", f"**{_pct([r['test_accuracy_tta'] for r in rows])}**",
                  _pct([r["test_accuracy"] for r in rows]), "", "",
                  f"max {max(r['wall_seconds'] for r in rows) / 60:.1f} min"])
    option = f" --set epochs={epochs}" if epochs else ""
    return _table(f"`cifar10cnn train --recipe fast --final{option} --seed S`",
                  ["seed", "test accuracy (multi-crop TTA)", "single view", "epochs", "training s", "wall time"], cells)


def _shortened_epochs(results: Path) -> list[int]:
    return sorted({int(p.name.split("-")[1][:-2]) for p in results.glob("final-*ep-seed*.json")})


def budget_table(results: Path) -> str:
    rows = sorted(_kept(results, "budget-*.json"), key=lambda r: r["minutes"])
    cells = [[f"{r['minutes']:g} min", *_accuracy_cells(r),
              f"{r['budget']['planned_epochs']} → {r['budget']['epochs_run']}", f"{r['wall_seconds'] / 60:.1f} min"]
             for r in rows]
    return _table("`cifar10cnn train --recipe fast --final --time-budget M`",
                  ["budget", "test accuracy (multi-crop TTA)", "single view", "epochs planned → run", "wall time"],
                  cells) if rows else ""


def switch_table(results: Path) -> str:
    """Under a time budget the probe's ±8% decides how many epochs fit, and one epoch is worth more than most
    tricks: each switch is compared with the full recipe under the same budget AND with the full recipe run for
    the same number of epochs (the mean of `final --epochs E` seeds if measured, else the budget runs)."""
    rows = _kept(results, "switch-*.json")  # file names keep the recipe's order
    if not rows:
        return ""
    full = next((r for r in rows if r["switch"] == "none"), None)
    same_epochs = {r["epochs"]: r["test_accuracy_tta"] for r in _kept(results, "budget-*.json")
                   if r["minutes"] == rows[0]["minutes"]}
    if full:
        same_epochs[full["epochs"]] = full["test_accuracy_tta"]
    for e in _shortened_epochs(results):
        same_epochs[e] = statistics.fmean(r["test_accuracy_tta"] for r in _kept(results, f"final-{e}ep-seed*.json"))

    def change(r: dict, ref: float | None) -> str:
        return "" if ref is None or r is full else f"{(r['test_accuracy_tta'] - ref) * 100:+.2f}"

    cells = [["nothing (the full recipe)" if r is full else r["switch"], *_accuracy_cells(r),
              change(r, full and full["test_accuracy_tta"]), change(r, same_epochs.get(r["epochs"])), r["epochs"],
              f"{r['wall_seconds'] / 60:.1f} min"] for r in rows]
    refs = ", ".join(f"{e} epochs {acc:.2%}" for e, acc in sorted(same_epochs.items()))
    return _table(f"The recipe's switches: each trick turned off, `--time-budget {rows[0]['minutes']:g}`, seed 0 "
                  f"(full recipe, same epochs: {refs})",
                  ["turned off", "test accuracy (recipe's TTA)", "without TTA", "points vs full recipe",
                   "points vs full recipe, same epochs", "epochs", "wall time"], cells)


def write_tables(results: Path, path: Path) -> str:
    from cifar10cnn.fileio import atomic_write_text

    tables = [final_table(results), budget_table(results), switch_table(results)]
    tables += [final_table(results, e) for e in _shortened_epochs(results)]
    parts = [t for t in tables if t]
    text = "# The `fast` recipe on this machine\n\n" + "\n".join(parts)
    atomic_write_text(path, text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["final", "budget", "switches", "table"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, help="final: the recipe shortened to this many epochs (a reference for "
                    "the switch table, whose runs fit fewer epochs)")
    ap.add_argument("--minutes", nargs="+", type=float, help="budgets (default: 5 10; switches: 5)")
    ap.add_argument("--only", nargs="+", metavar="SWITCH", help="switches to measure now (default: all)")
    ap.add_argument("--runs", type=Path, default=Path("runs/fast"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--table", type=Path, default=Path("benchmarks/results/fast.md"))
    args = ap.parse_args()

    from cifar10cnn.config import RunConfig
    from cifar10cnn.data.cifar10 import load_cifar10
    from cifar10cnn.recipes import FAST_SWITCHES

    if args.only and any(s not in FAST_SWITCHES for s in args.only):
        print(f"error: unknown switch; valid: {', '.join(FAST_SWITCHES)}", file=sys.stderr)
        return 2
    jobs = []  # (result file, run folder, config overrides, figures about the run)
    if args.what == "final":
        short = {"epochs": args.epochs} if args.epochs else {}
        jobs = [(f"final-{args.epochs}ep-seed{s}" if short else f"final-seed{s}", {"seed": s, **short}, {"seed": s})
                for s in args.seeds]
    elif args.what == "budget":
        jobs = [(f"budget-{m:g}min", {"time_budget": m}, {"minutes": m}) for m in args.minutes or [5.0, 10.0]]
    elif args.what == "switches":
        (m,) = args.minutes or [5.0]
        jobs = [(f"switch-{m:g}min-00", {"time_budget": m}, {"switch": "none", "minutes": m})]
        jobs += [(f"switch-{m:g}min-{list(FAST_SWITCHES).index(n) + 1:02d}", {"time_budget": m, **FAST_SWITCHES[n]},
                  {"switch": n, "minutes": m}) for n in args.only or FAST_SWITCHES]
    # the data set only if something may have to be trained (kept figures need none)
    data = load_cifar10() if any(not (args.results / f"{key}.json").is_file() for key, *_ in jobs) else None
    for key, overrides, about in jobs:
        print(f"{key}: {about}", flush=True)
        kept_or_trained(args.results / f"{key}.json", args.runs / key,
                        lambda o=overrides: RunConfig.resolve("fast", {"final": True, **o}), data, **about)
        write_tables(args.results, args.table)
    print(write_tables(args.results, args.table))
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
