"""The results tables of README.md and docs/*.md, generated from the kept result files in benchmarks/results.

    .venv/bin/python benchmarks/doc_tables.py           rewrite every generated block from the kept files
    .venv/bin/python benchmarks/doc_tables.py --check   exit 1 and name the blocks that disagree (tests do this)

A block is the text between `<!-- table:NAME … -->` and `<!-- /table:NAME -->` in a page; TABLES maps each
NAME to the function that renders it. Every row says where it came from: the CPU and precision and the code
commit recorded in its file, or — for files kept before results recorded provenance — the commit that added
the file (benchmarks/results/legacy.json), marked "legacy". Edit the prose around a block, never the block.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from frontier import CURRENT, epochs_ran  # the kept runs' names and epochs as the frontier's curves and plot read them

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- table:([\w-]+) [^\n]*?-->\n)(.*?)(<!-- /table:\2 -->)", re.S)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --- reading kept files -------------------------------------------------------------------------------------


def kept(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def kept_glob(pattern: str) -> list[tuple[str, dict]]:
    return [(str(p.relative_to(RESULTS)), json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def cpu(prov: dict, key: str = "cpu") -> str:
    """The CPU a provenance names, with its instruction sets where recorded ("AMD EPYC (AVX-512 bf16, no AMX)")."""
    features = prov.get(f"{key}_features")
    return f"{prov[key]} ({features})" if features else prov[key]


def origin(name: str, result: dict) -> tuple[str, str, str]:
    """(where a kept figure was measured, what the commit is, the commit): CPU, precision and threads with the code
    commit recorded in the file — or, for a legacy file, the CPU the docs named and the commit that added it."""
    prov = result.get("provenance")
    if prov:
        code = prov.get("code") or {}
        commit = (code.get("commit") or "unknown")[:7] + ("+uncommitted changes" if code.get("dirty") else "")
        where = f"{cpu(prov, 'machine_cpu')}, {prov['precision']}, {prov['threads']} thread(s)"
        return where + (f", {result['note']}" if result.get("note") else ""), "code", commit
    legacy = json.loads((RESULTS / "legacy.json").read_text())["files"].get(name)
    if legacy is None:
        raise KeyError(f"{name} records no provenance and is not listed in benchmarks/results/legacy.json")
    return "Sapphire Rapids, bf16, legacy", "no provenance kept; files added in", legacy["added_in_commit"][:7]


def pct(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.fmean(values):.2%} ± {statistics.stdev(values):.2%} (n={len(values)})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def origins(items: list[tuple[str, dict]]) -> str:
    """The origins of several kept figures, grouped by machine: 'CPU, precision (code a, b)'."""
    by_machine: dict[tuple[str, str], set[str]] = {}
    for name, result in items:
        where, what, commit = origin(name, result)
        by_machine.setdefault((where, what), set()).add(commit)
    return "; ".join(f"{where} ({what} {', '.join(sorted(commits))})"
                     for (where, what), commits in sorted(by_machine.items()))


# --- the tables ---------------------------------------------------------------------------------------------


def _headline_row(label: str, items: list[tuple[str, dict]], tta_label: str, command: str) -> list:
    runs = [r for _, r in items]
    tta = [r["test_accuracy_tta"] for r in runs if r.get("test_accuracy_tta") is not None]
    walls = [r["wall_seconds"] / 60 for r in runs]
    minutes = f"{walls[0]:.1f}" if len(walls) == 1 else f"{min(walls):.1f}–{max(walls):.1f}"
    return [label, pct([r["test_accuracy"] for r in runs]), f"{pct(tta)} ({tta_label})" if tta else "–", minutes,
            origins(items), command]


def headline() -> str:
    """README: one row per recipe, every figure from a kept file, the same kind of time (the run's wall clock:
    training + test evaluation) in every row."""
    rows = []
    seed = kept_glob("make_run/seed*.json")
    if seed:
        rows.append(_headline_row("`seed` (the tutorial, exactly; 45k + 5k validation, early stopping)", seed, "",
                                  "`make run SEED=s`"))
    rows.append(_headline_row("`fast` (airbench94-shaped)", kept_glob("fast/final-seed*.json"),
                              "multi-crop, 6 views", "`cifar10cnn train --recipe fast --final --seed s`"))
    for (_, recipe), items in frontier_finals().items():  # per CPU class: its minutes are that CPU's
        rows.append(_headline_row(f"`{recipe}` ({FRONTIER_SHAPES.get(recipe, 'the fast model')}, "
                                  f"{items[0][1]['epochs']} epochs)", items, "multi-crop, 6 views",
                                  f"`cifar10cnn train --recipe {recipe} --final --seed s`"))
    rows.append(_headline_row("`fast`, 5-minute budget", kept_glob("fast/budget-5min.json"), "multi-crop, 6 views",
                              "`cifar10cnn train --recipe fast --final --time-budget 5`"))
    rows.append(_headline_row("`seed-aug` (+ augmentation, one-cycle), 20-minute budget",
                              kept_glob("model_table/seed-budget20.json"), "flip, 2 views",
                              "`cifar10cnn train --recipe seed-aug --final --time-budget 20`"))
    rows.append(_headline_row("`resnet` (ResNet-20), 20-minute budget", kept_glob("model_table/resnet20-budget20.json"),
                              "flip, 2 views", "`cifar10cnn train --recipe resnet --final --time-budget 20`"))
    return table(["recipe", "test accuracy, single view", "with TTA", "minutes (run wall clock: train + test)",
                  "measured on", "command"], rows)


NOT_YET = "_No kept runs yet: `benchmarks/seed_runs.py` trains and keeps them._\n"


def make_run() -> str:
    """results.md: the seed model the seed's way, one row per seed."""
    items = kept_glob("make_run/seed*.json")
    if not items:
        return NOT_YET
    rows = [[r["seed"], f"{r['test_accuracy']:.2%}", f"{r['best_epoch']} / {r['epochs']}", f"{r['train_seconds']:.0f}",
             f"{r['wall_seconds']:.0f}", r["provenance"]["threads"]] for _, r in items]
    rows.append(["**mean ± std**", f"**{pct([r['test_accuracy'] for _, r in items])}**", "", "", "", ""])
    return (table(["seed", "test accuracy (single view)", "best epoch / epochs", "training s", "run wall s",
                   "threads"], rows) + f"\nMeasured on: {origins(items)}.\n")


def make_run_classes() -> str:
    """results.md: the per-class ranking over the `make run` seeds and the test of the seed's per-class claim."""
    from cifar10cnn.evaluation.compare import summarise

    items = kept_glob("make_run/seed*.json")
    if len(items) < 2:
        return NOT_YET
    s = summarise([r for _, r in items])
    rows = [[i, c["class"], f"{c['mean']:.1%} ± {c['std']:.1%}", f"{c['min']:.1%}–{c['max']:.1%}",
             f"{c['ci'][0]:.1%}–{c['ci'][1]:.1%}"] for i, c in enumerate(s["per_class"], 1)]
    claim = s["class_claim"]
    return (table(["rank", "class", "accuracy mean ± std", "min–max over seeds",
                   f"95% interval (seeds + {s['per_class'][0]['images']:,} test images)"], rows)
            + f"\nThe seed's per-class claim, tested across the {len(items)} seeds: **{claim['verdict']}** — "
              f"{claim['figures']}.\n")


def class_claim_verdict() -> str:
    """README: the per-class claim's verdict over the kept `make run` seeds, in one sentence."""
    items = kept_glob("make_run/seed*.json")
    if len(items) < 2:
        return NOT_YET
    from cifar10cnn.evaluation.compare import summarise

    s = summarise([r for _, r in items])
    top = ", ".join(f"{c['class']} {c['mean']:.1%}" for c in s["per_class"][:2])
    bottom = ", ".join(f"{c['class']} {c['mean']:.1%}" for c in s["per_class"][-2:])
    return (f"The seed's per-class claim (ships and automobiles easiest, cats and dogs hardest) over the "
            f"{len(items)} `make run` seeds: **{s['class_claim']['verdict']}** (easiest {top}; hardest {bottom}; "
            f"{s['class_claim']['figures']}).\n")


def _fast_rows(items: list[tuple[str, dict]]) -> list[list]:
    return [[r["seed"], f"{r['test_accuracy_tta']:.2%}", f"{r['test_accuracy']:.2%}", r["epochs"],
             f"{r['train_seconds']:.0f} s", f"{r['wall_seconds'] / 60:.1f} min"] for _, r in items]


def fast_final() -> str:
    return final_table(kept_glob("fast/final-seed*.json"))


def final_table(items: list[tuple[str, dict]]) -> str:
    """A row per kept `train --recipe R --final --seed S` run and their mean ± std."""
    rows = _fast_rows(items)
    rows.append(["**mean ± std**", f"**{pct([r['test_accuracy_tta'] for _, r in items])}**",
                 pct([r["test_accuracy"] for _, r in items]), "", "",
                 f"max {max(r['wall_seconds'] for _, r in items) / 60:.1f} min"])
    return (table(["seed", "test accuracy (multi-crop TTA, 6 views)", "single view", "epochs", "training",
                   "run wall clock"], rows) + f"\nMeasured on: {origins(items)}.\n")


FRONTIER_SHAPES = {"fast": "airbench94-shaped", "fast-muon": "airbench94_muon-shaped: Muon for the filters",
                   "fast95": "airbench95-shaped: widths 128/384/384", "fast96": "airbench96-shaped: 3 convs per group"}


def per_cpu_class(pattern: str) -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """Kept frontier runs (benchmarks/frontier.py keeps them in a folder per CPU class: frontier/CLASS/NAME.json)
    matching `pattern` inside such a folder, by (CPU class, recipe): bf16 and fp32, fast and slow CPUs apart."""
    out: dict[tuple[str, str], list] = {}
    for name, r in kept_glob(f"frontier/*/{pattern}"):
        out.setdefault((Path(name).parent.name, r["recipe"]), []).append((name, r))
    return dict(sorted(out.items()))


def frontier_finals() -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """The kept `train --recipe R --final --seed S` runs of benchmarks/frontier.py, by (CPU class, recipe)."""
    return per_cpu_class("final-*-seed*.json")


def frontier_final() -> str:
    """frontier.md: `train --recipe R --final --seed S` of the frontier's recipes (benchmarks/frontier.py --steps
    final), a table per recipe and CPU class."""
    finals = frontier_finals()
    if not finals:
        return "_No kept runs yet: `benchmarks/frontier.py --steps final` trains and keeps them._\n"
    return "\n".join(f"`{recipe}` (kept in `frontier/{folder}/`):\n\n" + final_table(items)
                     for (folder, recipe), items in finals.items())


def fast_budget() -> str:
    items = sorted(kept_glob("fast/budget-*.json"), key=lambda x: x[1]["minutes"])
    rows = [[f"{r['minutes']:g} min, seed {r.get('seed', 0)}", f"{r['test_accuracy_tta']:.2%}",
             f"{r['test_accuracy']:.2%}",
             f"{r['budget']['planned_epochs']} → {r['budget']['epochs_run']}",
             f"{r['budget']['train_images_per_s']:,.0f}", f"{r['wall_seconds'] / 60:.1f} min"] for _, r in items]
    return (table(["`--time-budget`", "test accuracy (multi-crop TTA, 6 views)", "single view",
                   "epochs planned → run", "probe's train img/s", "run wall clock"], rows)
            + f"\nMeasured on: {origins(items)}.\n")


def _plan(r: dict) -> str:
    """'6' or '6→5' (re-planned after a slower epoch than the probe measured)."""
    b = r["budget"]
    ran = b.get("epochs_run", r["epochs"])  # 8.5: the last epoch ended half-way
    return f"{b['planned_epochs']}→{ran}" if b.get("replanned") else str(ran)


def fast_switches() -> str:
    """Each trick turned off under the same budget, against (a) every full-recipe run kept under that budget
    (mean, n stated) and (b) full-recipe runs with the same epochs and the same plan (clean or re-planned)."""
    switches = kept_glob("fast/switch-*.json")
    minutes = switches[0][1]["minutes"]
    full = [(n, r) for n, r in switches if r["switch"] == "none"]
    full += [(n, r) for n, r in kept_glob(f"fast/budget-{minutes:g}min*.json")]
    full_acc = [r["test_accuracy_tta"] for _, r in full]
    baseline = statistics.fmean(full_acc)
    same_plan: dict[str, list[float]] = {}
    for _, r in full:
        same_plan.setdefault(_plan(r), []).append(r["test_accuracy_tta"])
    for _, r in kept_glob("fast/final-*ep-seed*.json"):  # the recipe shortened to E epochs: a clean E-epoch plan
        same_plan.setdefault(str(r["epochs"]), []).append(r["test_accuracy_tta"])

    def vs(r: dict, ref: list[float] | None) -> str:
        return f"{(r['test_accuracy_tta'] - statistics.fmean(ref)) * 100:+.2f} (n={len(ref)})" if ref else "–"

    rows = [[r["switch"] if r["switch"] != "none" else "nothing (the full recipe)", f"{r['test_accuracy_tta']:.2%}",
             f"{r['test_accuracy']:.2%}", vs(r, full_acc) if r["switch"] != "none" else "",
             vs(r, same_plan.get(_plan(r))) if r["switch"] != "none" else "", _plan(r),
             f"{r['budget']['train_images_per_s']:,.0f}", f"{r['wall_seconds'] / 60:.1f} min"] for _, r in switches]
    probe = [r["budget"]["train_images_per_s"] for _, r in switches + full]
    spread = (max(probe) - min(probe)) / 2 / statistics.fmean(probe)
    refs = "; ".join(f"{plan} epochs: {pct(v)}" for plan, v in sorted(same_plan.items()))
    return (table(["turned off", "test accuracy (recipe's TTA)", "single view",
                   f"points vs the full recipe under {minutes:g} min (mean of {len(full)} runs: {baseline:.2%})",
                   "points vs the full recipe, same epochs and plan", "epochs (planned→run)", "probe's img/s",
                   "run wall clock"], rows)
            + f"\nReferences by plan (test accuracy with TTA): {refs}. The probe measured {min(probe):,.0f}–"
              f"{max(probe):,.0f} img/s over these runs (±{spread:.0%} around their mean). "
              + (f"**The budget baseline has {len(full)} runs, fewer than the 3 a fair baseline needs** "
                 f"(`benchmarks/fast_recipe.py budget --minutes {minutes:g} --seeds 0 1 2` adds them). "
                 if len(full) < 3 else "")
            + f"Measured on: {origins(switches + full)}.\n")


def model_table() -> str:
    from cifar10cnn.models import create_model, forward_flops, trainable_params

    items = sorted(kept_glob("model_table/*.json"), key=lambda x: forward_flops(create_model(x[1]["model"])))
    rows = []
    for _, r in items:
        net = create_model(r["model"])
        rows.append([f"`{r['model']}`", f"{trainable_params(net):,}", f"{forward_flops(net) / 1e6:,.1f}",
                     "`seed-aug`" if r["model"] == "seed" else "`resnet`", f"{r['test_accuracy_tta']:.2%}",
                     f"{r['test_accuracy']:.2%}", r["epochs"], f"{r['wall_seconds'] / 60:.1f} min"])
    return (table(["model", "trainable params", "forward MFLOPs / image", "recipe",
                   f"test accuracy after {items[0][1]['budget_minutes']:g} min (flip TTA, 2 views)", "single view",
                   "epochs", "run wall clock"], rows) + f"\nMeasured on: {origins(items)}.\n")


def tune_seeds() -> str:
    """The tuned and the recipe's settings retrained with 3 seeds, and Welch's test of the difference."""
    from cifar10cnn.stats import welch

    runs = kept("tune/final_seeds.json")
    best, base = ([r["test_accuracy"] for r in sorted(runs[k], key=lambda r: r["seed"])] for k in ("best", "baseline"))
    c = welch(best, base)
    rows = [["the seed recipe", *(f"{a:.2%}" for a in base), pct(base)],
            ["tuned (the best trial)", *(f"{a:.2%}" for a in best), f"**{pct(best)}**"]]
    return (table(["`--final`, 4 epochs on 50,000 images", *(f"seed {r['seed']}" for r in runs["best"]),
                   "mean ± std"], rows)
            + f"\nTuned − recipe: **{c.diff * 100:+.2f} points** (95% CI {c.ci[0] * 100:+.2f} to {c.ci[1] * 100:+.2f}, "
              f"Welch p = {c.p:.2g}; computed here from the kept file). "
              f"Measured on: {origins([('tune/final_seeds.json', r) for r in runs['best'] + runs['baseline']])}.\n")


def distributed_equivalence() -> str:
    """distributed.md: one process (2 threads) against torchrun (2 ranks × 1 thread), the same shortened recipe,
    global batch and seeds; Welch's test of the accuracy difference and the speed ratio, from the kept files."""
    from cifar10cnn.stats import welch

    items = kept_glob("distributed/*.json")
    if not items:
        return "_No kept runs yet: `benchmarks/distributed_runs.py` trains and keeps them._\n"
    rows, notes = [], []
    for recipe in sorted({r["recipe"] for _, r in items}, key=lambda name: name != "seed"):
        arms = {mode: sorted((r for _, r in items if r["recipe"] == recipe and r["mode"] == mode),
                             key=lambda r: r["seed"]) for mode in ("one", "ddp2")}
        for mode, runs in arms.items():
            if not runs:
                continue
            s = runs[0]["settings"]
            rows.append([f"`{recipe}`, {s['subset']:,} images × {s['epochs']} epochs, batch {s['batch_size']}",
                         "1 process × 2 threads" if mode == "one" else "torchrun: 2 ranks × 1 thread",
                         ", ".join(f"{r['test_accuracy']:.2%}" for r in runs), pct([r["test_accuracy"] for r in runs]),
                         f"{statistics.median(r['train_images_per_s'] for r in runs):,.0f}",
                         f"{statistics.fmean(r['wall_seconds'] for r in runs):.0f}"])
        if len(arms["one"]) >= 2 and len(arms["ddp2"]) >= 2:
            c = welch([r["test_accuracy"] for r in arms["ddp2"]], [r["test_accuracy"] for r in arms["one"]])
            speed = (statistics.median(r["train_images_per_s"] for r in arms["ddp2"])
                     / statistics.median(r["train_images_per_s"] for r in arms["one"]))
            wall = (statistics.fmean(r["wall_seconds"] for r in arms["ddp2"])
                    / statistics.fmean(r["wall_seconds"] for r in arms["one"]))
            notes.append(f"`{recipe}`: 2 ranks − 1 process **{c.diff * 100:+.2f} points** (95% CI "
                         f"{c.ci[0] * 100:+.2f} to {c.ci[1] * 100:+.2f}, Welch p = {c.p:.2g}); training speed "
                         f"×{speed:.2f}, run wall time ×{wall:.2f}")
    return (table(["recipe (shortened)", "how", "test accuracy per seed (single view)", "mean ± std",
                   "train img/s (median)", "run wall s (mean)"], rows)
            + "\n" + "".join(f"- {n}\n" for n in notes) + f"\nMeasured on: {origins(items)}.\n")


def folder_datasets() -> str:
    """datasets.md: CIFAR-10 as PNG files vs the batches (decode speed, pixel identity, the shortened `fast --final`
    per seed with Welch's test), the digits per seed, and `--time-budget 5` on the PNG tree; from the kept files."""
    from cifar10cnn.stats import welch

    out = []
    if (RESULTS / "folder/png-load.json").is_file():
        r = kept("folder/png-load.json")
        out.append(f"Loading the PNG tree ({r['images']:,} files): first load {r['first_load_seconds']:.1f} s "
                   f"(**{r['first_load_images_per_s']:,.0f} images/s** decoded), second load "
                   f"**{r['second_load_seconds']:.2f} s** (from the cache); decoded pixels and labels "
                   f"{'identical to' if r['same_pixels_and_labels_as_batches'] else 'DIFFERENT from'} the batches' "
                   f"({r['machine_cpu']}, code {r['code']['commit'][:7]}"
                   f"{'+uncommitted changes' if r['code']['dirty'] else ''}; `{r['command']}`).\n\n")
    arms = {src: sorted((r for _, r in kept_glob(f"folder/fast-{src}-seed*.json")), key=lambda r: r["seed"])
            for src in ("batches", "png")}
    rows = []
    for src, runs in arms.items():
        if runs:
            s = runs[0]["settings"]
            rows.append([f"`fast --final`, {s['subset']:,} images × {s['epochs']} epochs",
                         "the batches (`--dataset cifar10`)" if src == "batches" else "PNG tree (`--dataset folder:…`)",
                         ", ".join(f"{r['test_accuracy']:.2%}" for r in runs), pct([r["test_accuracy"] for r in runs]),
                         f"{statistics.fmean(r['wall_seconds'] for r in runs):.0f}"])
    if rows:
        out.append(table(["recipe (shortened)", "images from", "test accuracy per seed (single view)", "mean ± std",
                          "run wall s (mean)"], rows))
        if len(arms["batches"]) >= 2 and len(arms["png"]) >= 2:
            c = welch([r["test_accuracy"] for r in arms["png"]], [r["test_accuracy"] for r in arms["batches"]])
            out.append(f"\n- PNG tree − batches **{c.diff * 100:+.2f} points** (95% CI {c.ci[0] * 100:+.2f} to "
                       f"{c.ci[1] * 100:+.2f}, Welch p = {c.p:.2g})\n")
    digits = sorted((r for _, r in kept_glob("folder/digits-seed*.json")), key=lambda r: r["seed"])
    if digits:
        out.append("\n" + table(["data set", "recipe", "test accuracy per seed (single view)", "mean ± std",
                                  "balanced accuracy (mean)"],
                                 [["scikit-learn digits as PNG class folders (1,797 images, test: a fixed fifth)",
                                   f"`seed`, at most {digits[0]['settings']['epochs']} epochs",
                                   ", ".join(f"{r['test_accuracy']:.2%}" for r in digits),
                                   pct([r["test_accuracy"] for r in digits]),
                                   pct([r["test_balanced_accuracy"] for r in digits if "test_balanced_accuracy" in r])
                                   or "–"]]))
    if (RESULTS / "folder/fast-png-budget5.json").is_file():
        r = kept("folder/fast-png-budget5.json")
        b = r["budget"]
        out.append(f"\n`train --dataset folder:… --recipe fast --time-budget 5` on the PNG tree: {b['planned_epochs']} "
                   f"epoch(s) planned, {b['epochs_run']} run, **{r['wall_seconds']:.0f} s** wall in all, test accuracy "
                   f"**{r['test_accuracy']:.2%}** single view"
                   + (f", {r['test_accuracy_tta']:.2%} with TTA" if r.get("test_accuracy_tta") is not None else "")
                   + ". Per class (single view):\n\n"
                   + table(["class", *r["per_class_accuracy"]], [["accuracy", *(f"{v:.1%}" for v in
                                                                                r["per_class_accuracy"].values())]]))
    everything = [*[(n, r) for n, r in kept_glob("folder/*.json") if "provenance" in r]]
    if not out:
        return "_No kept runs yet: `benchmarks/folder_datasets.py` measures and keeps them._\n"
    return "".join(out) + (f"\nMeasured on: {origins(everything)}.\n" if everything else "")


def engine_refactor_speed() -> str:
    """speed.md: `cifar10cnn bench` before/after the engine refactor, alternating runs in one sitting."""
    lines = (RESULTS / "speed" / "engine-refactor-bench.jsonl").read_text().splitlines()
    about, runs = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    rows = []
    for args in dict.fromkeys(r["args"] for r in runs):
        by = {code: [r for r in runs if r["args"] == args and r["code"] == code] for code in ("before", "after")}

        def ms(code: str, key: str, by=by) -> str:
            v = [r[key] for r in by[code]]
            return f"{statistics.fmean(v):,.0f} ± {statistics.stdev(v):,.0f}"

        ratio = (statistics.fmean(r["train_images_per_s"] for r in by["after"])
                 / statistics.fmean(r["train_images_per_s"] for r in by["before"]))
        rows.append([f"`cifar10cnn bench {args}`", ms("before", "train_images_per_s"),
                     ms("after", "train_images_per_s"), f"{ratio:.2f}",
                     ms("before", "eval_images_per_s"), ms("after", "eval_images_per_s"),
                     len(by["before"])])
    return (table(["command", "train img/s before", "after", "after / before", "eval img/s before", "after",
                   "runs each"], rows)
            + f"\n{about['about']}; {about['cpu']}; {about['date']}. Mean ± std over the runs.\n")


def _measured_by(result: dict) -> str:
    prov, code = result["provenance"], result["provenance"]["code"]
    return (f"`{result['command']}` on {cpu(prov)}, torch {prov['torch']}, code {code['commit'][:7]}"
            f"{' + uncommitted changes' if code['dirty'] else ''}")


def predict_onnx() -> str:
    """results.md: `predict` on the test set as PNG files against `evaluate`, and ONNX parity, from one kept file."""
    path = RESULTS / "use" / "predict_onnx.json"
    if not path.is_file():
        return "_Not kept yet: `benchmarks/predict_vs_evaluate.py RUN --out " \
               "benchmarks/results/use/predict_onnx.json` measures it._\n"
    r = json.loads(path.read_text())
    o = r["onnx"]
    rows = [["`predict` on the test images as PNG files vs `evaluate` (same weights)",
             f"accuracy {r['predict_accuracy']:.2%} vs {r['evaluate_accuracy']:.2%}; same top-1 for "
             f"{r['agreement']:,} of {r['images']:,}"],
            ["`predict`, end to end (start-up, PNG decoding, inference)",
             f"{r['predict_seconds']:.1f} s = {r['images'] / r['predict_seconds']:,.0f} images/s "
             f"({r['precision']}; `evaluate`'s forward pass alone: {r['evaluate_forward_images_per_s']:,.0f} "
             f"images/s)"],
            ["ONNX (onnxruntime) vs PyTorch fp32, same images",
             f"same top-1 {o['same_top1']:,}/{o['images']:,}; max \\|Δp\\| {o['max_abs_diff']:.2e} (tolerance "
             f"{o['tolerance']:.0e}); {o['onnx_mb']:.1f} MB"]]
    return table(["check", "result"], rows) + f"\nMeasured by {_measured_by(r)}; run {r['run']}.\n"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} MB"


def serving() -> str:
    """results.md: `serve` under `loadtest`, rows appended by benchmarks/serve_bench.py --out."""
    path = RESULTS / "use" / "serve_bench.jsonl"
    if not path.is_file():
        return "_Not kept yet: `benchmarks/serve_bench.py RUN --out benchmarks/results/use/serve_bench.jsonl`._\n"
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [[r["backend"], r["clients"], f"{r['images_per_s']:,.0f}", f"{r['p50_ms']:.1f} ms",
             f"{r['p95_ms']:.1f} ms", f"{r['p99_ms']:.1f} ms", r["errors"],
             f"{r['forward_passes']:,} / {r['requests']:,}",
             f"{_mb(r['server_rss_mb_start'])} → {_mb(r['server_rss_mb_end'])}"] for r in runs]
    return (table(["backend", "clients", "images/s", "p50", "p95", "p99", "errors", "forward passes / requests",
                   "server memory"], rows) + f"\nMeasured by {_measured_by(runs[0])}.\n")


def frontier_muon_val() -> str:
    """frontier.md: `fast` against `fast-muon` on the validation split (the shortened choice), per seed."""
    groups = per_cpu_class("val-*.json")
    if not groups:
        return "_No kept runs yet: `benchmarks/frontier.py --steps muon-val` trains and keeps them._\n"
    rows = []
    for (folder, recipe), kept in groups.items():
        runs = sorted((r for _, r in kept), key=lambda r: r["seed"])
        rows.append([f"`{folder}`", f"`{recipe}`", runs[0]["epochs"], runs[0]["settings"]["batch_size"],
                     ", ".join(f"{r['best_val_accuracy']:.2%}" for r in runs),
                     pct([r["best_val_accuracy"] for r in runs]),
                     f"{runs[0]['epochs'] * runs[0]['settings']['subset']:,}"])
    return (table(["CPU class", "recipe", "epochs", "batch", "best validation accuracy per seed", "mean ± std",
                   "images trained (the compute)"], rows)
            + f"\nMeasured on: {origins([i for kept in groups.values() for i in kept])}.\n")


NO_BUDGET_RUNS = "_No kept runs yet: `benchmarks/frontier.py --steps budget auto` trains and keeps them._\n"


def frontier_runs() -> str:
    """frontier.md: every kept `train --time-budget M` run of benchmarks/frontier.py (a named recipe, or the one
    the program picked), by CPU."""
    items = kept_glob("frontier/*/budget-*.json") + kept_glob("frontier/*/auto-*.json")
    if not items:
        return NO_BUDGET_RUNS
    rows = []
    for name, r in sorted(items, key=lambda i: (cpu(i[1]["provenance"], "machine_cpu"), i[1]["minutes"], i[0])):
        auto = Path(name).name.startswith("auto-")
        recipe = f"**auto → `{r['recipe']}`**" if auto else f"`{r['recipe']}`"
        cmd = f"`cifar10cnn train {'' if auto else '--recipe ' + r['recipe'] + ' '}--time-budget {r['minutes']:g}`"
        rows.append([f"{r['minutes']:g}", recipe, budget_epochs(r), f"{r['test_accuracy']:.2%}",
                     f"{r['test_accuracy_tta']:.2%}", f"{r['wall_seconds'] / 60:.1f}", origin(name, r)[0], cmd])
    return table(["budget (min)", "recipe", "epochs run (planned; re-planned to)", "test accuracy, single view",
                  "with the recipe's TTA", "wall min", "measured on", "command"], rows)


def frontier_best() -> str:
    """frontier.md: the frontier itself, per CPU class: at each budget, the best test accuracy (the recipe's TTA) of
    the kept `train --time-budget M` runs of benchmarks/frontier.py, named recipe or picked. Only each name's
    latest measurement counts (`budget-fast-5min.json`, not a `-whole-epochs` file kept from older code)."""
    by_budget: dict[tuple[str, float], list[tuple[str, dict]]] = {}
    for name, r in kept_glob("frontier/*/budget-*.json") + kept_glob("frontier/*/auto-*.json"):
        if CURRENT.fullmatch(Path(name).name):
            by_budget.setdefault((Path(name).parent.name, r["minutes"]), []).append((name, r))
    if not by_budget:
        return NO_BUDGET_RUNS
    rows = []
    for (folder, minutes), items in sorted(by_budget.items()):
        name, r = max(items, key=lambda i: i[1]["test_accuracy_tta"])
        auto = Path(name).name.startswith("auto-")
        run, ran = (f"auto → `{r['recipe']}`" if auto else f"`--recipe {r['recipe']}`"), epochs_ran(r)
        rows.append([f"`{folder}`", f"{minutes:g}", f"{run}, {ran:g} epoch{'' if ran == 1 else 's'}",
                     f"**{r['test_accuracy_tta']:.2%}**", f"{r['test_accuracy']:.2%}", f"{r['wall_seconds'] / 60:.1f}",
                     len(items), origin(name, r)[2], f"`{name}`"])
    return table(["CPU class", "budget (min)", "best run", "test accuracy, the recipe's TTA", "single view",
                  "wall min", "runs compared", "code", "kept in"], rows)


def budget_epochs(kept: dict) -> str:
    """The epochs a budget run ran; if it re-planned, what it planned first and each re-plan (E at epoch X)."""
    b = kept.get("budget") or {}
    ran = epochs_ran(kept)
    if not b.get("replanned"):
        return str(ran)
    replans = ", ".join(f"{x['epochs']} at epoch {x['after_epoch']:g}" for x in b["replanned"])
    return f"{ran} (planned {b['planned_epochs']}; {replans})"


def frontier_curves() -> str:
    """frontier.md: the measured curves `--time-budget` without `--recipe` picks from (src/cifar10cnn/frontier.json)."""
    curves = json.loads((ROOT / "src" / "cifar10cnn" / "frontier.json").read_text())["recipes"]
    rows = []
    for recipe, c in curves.items():
        for p in c["points"]:
            where = "; ".join(sorted({origin(s.removeprefix("benchmarks/results/"),
                                             json.loads((ROOT / s).read_text()))[0] for s in p["sources"]}))
            rows.append([f"`{recipe}`", p["epochs"], f"{p['test_accuracy_tta']:.2%}", p["runs"],
                         ", ".join(f"`{s.removeprefix('benchmarks/results/')}`" for s in p["sources"]), where])
    return table(["recipe", "epochs", "test accuracy (its TTA)", "runs", "kept in", "measured on"], rows)


def frontier_flops() -> str:
    """frontier.md and speed.md: `cifar10cnn bench --flops`, achieved against attainable GFLOP/s (rows appended by
    benchmarks/frontier.py --steps flops)."""
    path = RESULTS / "frontier" / "flops.jsonl"
    if not path.is_file():
        return "_No kept rows yet: `benchmarks/frontier.py --steps flops` measures them._\n"
    from cifar10cnn.config import RunConfig

    rows = []
    kept_rows = [json.loads(line) for line in path.read_text().splitlines()]
    best: dict[tuple[str, str], float] = {}  # per CPU and precision, the best attainable rate: the steadiest ceiling
    for r in kept_rows:
        key = (cpu(r["provenance"]), r["precision"])
        best[key] = max(best.get(key, 0.0), r["attainable_gflops_per_s"]["peak"])
    for r in kept_rows:
        peak = r["attainable_gflops_per_s"]
        prov = r["provenance"]
        cfg = RunConfig.resolve(r["recipe"])
        run_min = (f"{cfg.epochs} × 45,000: {cfg.epochs * 45_000 / r['train_images_per_s'] / 60:,.0f}"
                   if not cfg.patience else "— (early stopping)")
        rows.append([f"`{r['recipe']}`", r["batch_size"], f"{r['train_gflops_per_image']:.3f}",
                     f"{r['train_images_per_s']:,.0f}", run_min, f"{r['train_gflops_per_s']:,.1f}",
                     f"{r['train_fraction_of_peak']:.0%} "
                     f"({r['train_gflops_per_s'] / best[cpu(r['provenance']), r['precision']]:.0%})",
                     f"{r['eval_gflops_per_s']:,.1f} ({r['eval_fraction_of_peak']:.0%})",
                     f"{peak['peak']:,.1f} {peak['dtype']} (matmul {peak['matmul']:,.1f}, conv {peak['conv']:,.1f})",
                     f"{cpu(prov)}, {r['precision']}, {r['threads']} threads, "
                     f"code {(prov['code']['commit'] or '?')[:7]}"])
    return table(["recipe", "batch", "GFLOP per training image", "train img/s",
                  "training minutes of its epochs at this speed", "train GFLOP/s",
                  "of its attainable (of the best attainable of its CPU and precision)",
                  "eval GFLOP/s (of attainable)", "attainable GFLOP/s (measured)", "measured on"], rows)


def conv_speed() -> str:
    """frontier.md: each trained convolution's three passes, by oneDNN as training runs them and by the alternatives
    (benchmarks/conv_speed.py), then per model the convolution seconds of one training step."""
    path = RESULTS / "speed" / "conv_speed.json"
    if not path.is_file():
        return "_No kept measurement yet: `benchmarks/conv_speed.py` measures it._\n"
    k = json.loads(path.read_text())
    passes = ("forward", "input_grad", "weight_grad")

    def others(rates: dict, p: str) -> str:
        found = [(v[p], way) for way, v in rates.items() if way != "onednn-cl" and p in v]
        rate, way = max(found) if found else (None, None)
        return f"{rate:,.0f} ({way})" if rate is not None else "—"

    rows, totals = [], []
    for m in k["models"]:
        for layer in m["layers"]:
            r = layer["gflops_per_s"]
            n, c, h, w = layer["x"]
            rows.append([f"`{m['model']}` b{m['batch_size']}", f"`{layer['layer']}`", f"{c}→{layer['w'][0]}, {h}×{w}",
                         f"{layer['gflop_per_pass']:.2f}",
                         " / ".join(f"{r['onednn-cl'][p]:,.0f}" if p in r["onednn-cl"] else "—" for p in passes),
                         *(others(r, p) for p in passes)])
        ours, best = m["conv_seconds_per_step"], m["conv_seconds_per_step_best_ways"]
        totals.append([f"`{m['model']}`", m["batch_size"], f"{sum(ours.values()):.3f}",
                       f"{ours['weight_grad'] / sum(ours.values()):.0%}", f"{sum(best.values()):.3f}",
                       f"{1 - sum(best.values()) / sum(ours.values()):.0%}"])
    peak = k["attainable_gflops_per_s"]
    prov = k["provenance"]
    return (table(["model, batch", "layer", "channels, input px", "GFLOP per pass",
                   "oneDNN channels_last (as `train`): forward / input grad / weight grad GFLOP/s",
                   "fastest other way: forward", "input grad", "weight grad"], rows) + "\n"
            + table(["model", "batch", "convolution s per training step (oneDNN channels_last)",
                     "of which the weight gradient", "with the fastest way of each pass", "saving"], totals)
            + f"\n{k['dtype']}, {k['threads']} threads, best of {k['repeats']} timed calls per rate; the sitting's "
              f"attainable rate {peak['peak']:,.1f} GFLOP/s (matmul {peak['matmul']:,.1f}, conv {peak['conv']:,.1f}); "
              f"measured on {cpu(prov)}, code {(prov['code']['commit'] or '?')[:7]}"
              f"{'+uncommitted changes' if prov['code'].get('dirty') else ''}, with `{prov['command']}`.\n")


def keras_vs_torch() -> str:
    """speed.md: the seed model against the seed's own Keras code, best of N alternating runs per side: the current
    comparison (keras_vs_torch.json, the README's claim), then those of other CPUs (keras_vs_torch-*.json)."""
    paths = sorted((RESULTS / "speed").glob("keras_vs_torch*.json"), key=lambda p: p.name != "keras_vs_torch.json")
    if not paths:
        return "_No kept comparison yet: `make bench-keras` measures and keeps it._\n"
    return "\n".join(_keras_table(json.loads(path.read_text())) for path in paths)


def _keras_table(k: dict) -> str:
    prov = k["provenance"]
    rows = [[r["batch_size"], f"{r['keras_train_images_per_s']:,.0f}", f"{r['cifar10cnn_train_images_per_s']:,.0f}",
             f"**{r['train_ratio']:.2f}×**", ", ".join(f"{v:,.0f}" for v in r["keras_runs_train_images_per_s"]),
             ", ".join(f"{v:,.0f}" for v in r["cifar10cnn_runs_train_images_per_s"]), r["keras"], r["cifar10cnn"]]
            for r in k["rows"]]
    return (table(["batch", "Keras train img/s (best)", "cifar10cnn train img/s (best)", "ratio of the bests",
                   "Keras, every run", "cifar10cnn, every run", "Keras", "cifar10cnn"], rows)
            + f"\nBest of {k['repeats']} alternating runs per side, {k['train_images']:,} timed training images "
              f"each; measured on {cpu(prov)}, code {(prov['code']['commit'] or '?')[:7]}, with "
              f"`{prov['command']}`{'; ' + k['note'] if k.get('note') else ''}.\n")


def keras_claim() -> str:
    """README: the speed claim against the tutorial's own Keras code, in one sentence, from the kept comparison."""
    path = RESULTS / "speed" / "keras_vs_torch.json"
    if not path.is_file():
        return "_No kept Keras comparison yet: `make bench-keras` measures it._\n"
    k = json.loads(path.read_text())
    ratios = ", ".join(f"**{r['train_ratio']:.1f}×** at batch {r['batch_size']} "
                       f"({r['cifar10cnn_train_images_per_s']:,.0f} against {r['keras_train_images_per_s']:,.0f} img/s)"
                       for r in k["rows"])
    return (f"The seed model trains {ratios} as fast as the tutorial's own Keras code (the best of "
            f"{k['repeats']} alternating runs per side, same images, same machine: {cpu(k['provenance'])}, "
            f"{k['rows'][0]['cifar10cnn'].split()[-1]}; `make bench-keras`, [docs/speed.md](docs/speed.md)).\n")


TABLES: dict[str, Callable[[], str]] = {
    "headline": headline, "make-run": make_run, "make-run-classes": make_run_classes, "fast-final": fast_final,
    "fast-5ep": lambda: final_table(kept_glob("fast/final-5ep-seed*.json")), "fast-budget": fast_budget,
    "fast-switches": fast_switches, "model-table": model_table, "tune-seeds": tune_seeds,
    "engine-refactor-speed": engine_refactor_speed, "class-claim": class_claim_verdict,
    "predict-onnx": predict_onnx, "serving": serving, "distributed-equivalence": distributed_equivalence,
    "folder-datasets": folder_datasets, "frontier-muon-val": frontier_muon_val, "frontier-runs": frontier_runs,
    "frontier-best": frontier_best,
    "frontier-final": frontier_final,
    "frontier-curves": frontier_curves, "frontier-flops": frontier_flops, "keras-vs-torch": keras_vs_torch,
    "keras-claim": keras_claim, "conv-speed": conv_speed,
}


# --- the blocks ---------------------------------------------------------------------------------------------


def render(name: str) -> str:
    if name not in TABLES:
        raise KeyError(f"no table named {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]()


def blocks_in(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2)) + m.group(4), text)


def stale_blocks(text: str) -> list[str]:
    return [name for name, body in blocks_in(text).items() if body != render(name)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only say which blocks disagree with the kept files")
    args = ap.parse_args()
    stale = 0
    for page in pages():
        text = page.read_text()
        names = stale_blocks(text)
        stale += len(names)
        if names and not args.check:
            page.write_text(regenerate(text))
        for name in names:
            print(f"{page.relative_to(ROOT)}: {name} {'is stale' if args.check else 'regenerated'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
