"""`cifar10cnn compare RUN...`: several finished runs (e.g. seeds) side by side, as mean ± std.

Figures are the single-view ones (`test_accuracy`, see runs.py); when every run was also evaluated with
the same TTA, its `test_accuracy_tta` is compared too. Per class (single view, or TTA for runs written
before the single-view per-class figures were kept) each class gets its mean ± std over the runs and a
95% interval that counts both sources of noise (stats.seed_and_image_interval): how much a retrained
model moves (the spread over seeds, of which there are few: a t quantile) and which images the test set
happens to hold (binomial, shared by every seed, so more seeds do not shrink it). Pooling k seeds × the
same 1,000 images into one "n = 3,000" interval would count each test image k times and ignore the
seed-to-seed spread; this does neither.

The seed's per-class claim ("best on ships and automobiles, worst on cats and dogs") is tested across
seeds (class_claim): each of the two named easiest classes against every other class, and every other
class against each of the two named hardest, paired by run, Holm-corrected as one family.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..errors import UserError
from ..runs import read_metrics
from ..stats import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    UNTESTABLE,
    all_of,
    family_verdicts,
    paired_seed_and_image,
    seed_and_image_interval,
)

EASIEST, HARDEST = ("ship", "automobile"), ("cat", "dog")  # the seed README's per-class claim


def _per_class_source(metrics: list[dict]) -> tuple[list[dict], str]:
    """(the per-class figures of each run, which evaluation they are): single view when all runs have it."""
    if all("per_class_accuracy" in m for m in metrics):
        return metrics, "single view"
    if all("per_class_accuracy" in m.get("tta", {}) for m in metrics):
        return [m["tta"] for m in metrics], "TTA"
    raise UserError("the runs have no common per-class figures; run `cifar10cnn evaluate RUN` on each")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _in_order(values: dict[str, list[float]], a: str, b: str) -> int:
    """In how many runs class a's accuracy is above class b's."""
    return sum(x > y for x, y in zip(values[a], values[b], strict=True))


def class_claim(values: dict[str, list[float]], n_images: dict[str, int], easiest=EASIEST, hardest=HARDEST,
                alpha: float = 0.05) -> dict:
    """Test "best on `easiest`, worst on `hardest`" over runs: every named easy class above every class not
    named easy, every class not named hard above every named hard class (paired by run; seed and test-image
    noise; Holm over the family). Supported when all of them are significant in the claimed direction, not
    supported when one is significant the other way, else inconclusive — with the weakest link named."""
    missing = [c for c in (*easiest, *hardest) if c not in values]
    if missing:
        return {"verdict": UNTESTABLE, "figures": f"the runs have no class named {', '.join(missing)}", "pairs": []}
    runs = len(next(iter(values.values())))
    pairs = [(e, o) for e in easiest for o in values if o not in easiest]
    pairs += [(o, h) for h in hardest for o in values if o not in hardest and (o, h) not in pairs]
    comps = [paired_seed_and_image(values[a], values[b], n_images[a], n_images[b], f"{a} > {b}") for a, b in pairs]
    verdicts, adjusted = family_verdicts(comps, alpha, min_effect=0.0)
    rows = [{"above": a, "below": b, "diff": c.diff, "ci": c.ci if c.testable else None,
             "p_holm": p if c.testable else None, "verdict": v,
             "runs_in_order": _in_order(values, a, b), "runs": runs}
            for (a, b), c, p, v in zip(pairs, comps, adjusted, verdicts, strict=True)]
    verdict = all_of(verdicts)
    held = sum(v == SUPPORTED for v in verdicts)
    against = [r for r in rows if r["verdict"] == NOT_SUPPORTED]
    # the pair furthest from significance (an untestable pair, with no spread at all, counts as furthest)
    weakest = max(rows, key=lambda r: (2.0 if r["p_holm"] is None else r["p_holm"], -r["diff"]))
    figures = (f"{held} of {len(rows)} pairs significant in the claimed order (Holm, alpha {alpha:g}, paired over "
               f"{runs} runs, seed and test-image noise)")
    if against:
        figures += "; against the claim: " + ", ".join(f"{r['below']} above {r['above']}" for r in against)
    elif verdict == INCONCLUSIVE and weakest["p_holm"] is not None:
        figures += (f"; the weakest: {weakest['above']} − {weakest['below']} {weakest['diff'] * 100:+.1f} points "
                    f"(95% CI {weakest['ci'][0] * 100:+.1f} to {weakest['ci'][1] * 100:+.1f}, Holm p "
                    f"{weakest['p_holm']:.2g}; in order in {weakest['runs_in_order']} of {runs} runs)")
    return {"verdict": verdict, "figures": figures, "pairs": rows}


def compare_runs(runs: list[Path]) -> dict:
    return {"runs": [str(r) for r in runs], **summarise([read_metrics(r) for r in runs])}


def summarise(metrics: list[dict]) -> dict:
    """The comparison of several runs' metrics (as in metrics.json, or kept benchmark results holding the same
    fields): accuracy mean ± std, per-class figures with seed-and-image intervals, the per-class claim's test."""
    if any("test_accuracy" not in m for m in metrics):
        raise UserError("a run has no test figures (a tuning trial?); compare finished, tested runs")
    figures, per_class_of = _per_class_source(metrics)
    classes = list(figures[0]["per_class_accuracy"])
    if any(list(f["per_class_accuracy"]) != classes for f in figures):
        raise UserError("the runs were evaluated on different classes")
    acc = [m["test_accuracy"] for m in metrics]
    tta = [m.get("test_accuracy_tta") for m in metrics]
    views = {m.get("tta", {}).get("views", m.get("tta_views")) for m in metrics}
    tta_summary = mean_std(tta) if None not in tta and len(views) == 1 else None
    values = {name: [f["per_class_accuracy"][name] for f in figures] for name in classes}
    n_images = {name: sum(figures[0]["confusion_matrix"][c]) for c, name in enumerate(classes)}
    per_class = []
    for name in classes:
        mu, sd = mean_std(values[name])
        per_class.append({"class": name, "mean": mu, "std": sd, "min": min(values[name]), "max": max(values[name]),
                          "ci": seed_and_image_interval(values[name], n_images[name]), "images": n_images[name]})
    per_class.sort(key=lambda r: -r["mean"])
    mu, sd = mean_std(acc)
    secs = [m.get("train_seconds") for m in metrics if m.get("train_seconds") is not None]
    return {"test_accuracy": acc, "mean": mu, "std": sd,
            "test_accuracy_tta": tta if tta_summary else None, "tta_views": views.pop() if tta_summary else None,
            "tta_mean": tta_summary[0] if tta_summary else None, "tta_std": tta_summary[1] if tta_summary else None,
            "per_class_of": per_class_of,
            "train_seconds": secs, "epochs": [m.get("epochs") for m in metrics],
            "best_epochs": [m.get("best_epoch") for m in metrics], "per_class": per_class,
            "class_claim": class_claim(values, n_images) if len(metrics) > 1 else None}
