"""The ablation's analysis: one record per run, one measure and one test per claim, and the pages.

Measures (all on the validation split, the per-class claim excepted):
    accuracy      validation accuracy at the last epoch (the ablation trains without early stopping, so no
                  epoch is chosen on the split the figure is measured on); a run that diverged counts as 10%
                  (chance): it ended with a NaN model
    gap           train accuracy (a fixed sample of training images, evaluated in eval mode: no dropout
                  noise) minus validation accuracy, at the last epoch
    turn epoch    the epoch of lowest validation loss, for the runs whose validation loss turned up before
                  the last epoch (overfitting); runs that never turned are counted apart, not averaged in
    loss rises    epochs whose mean training loss is higher than the epoch before (instability)
    test accuracy of the weights the recipe keeps (lowest validation loss), tested once per run; only the
                  per-class claim reads it
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..evaluation.compare import compare_runs, mean_std
from ..fileio import atomic_write, atomic_write_text
from ..stats import INCONCLUSIVE, all_of, any_of, family_verdicts, verdict, welch
from .records import CHANCE, read_history, run_name, run_record, write_runs_csv


def _fmt_ms(values: list[float], pct: bool = True, digits: int = 2) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "–"
    mu, sd = mean_std(values)
    if pct:
        return f"{mu:.{digits}%} ± {sd:.{digits}%}"
    return f"{mu:.{digits}f} ± {sd:.{digits}f}"


def _points(c) -> str:
    """A comparison in accuracy points: '+1.23 points (95% CI −0.40 to +2.86), p = 0.08'."""
    if not c.testable:
        return f"{c.diff * 100:+.2f} points, untestable (no spread in either arm)"
    return (f"{c.diff * 100:+.2f} points (95% CI {c.ci[0] * 100:+.2f} to {c.ci[1] * 100:+.2f}), "
            f"Welch p = {c.p:.3g}")


def _holm(p: float) -> str:
    return f" (Holm-adjusted p = {p:.3g})" if math.isfinite(p) else ""


def _turn(records: list[dict]) -> str:
    """The val-loss turn epoch of the runs that turned, and how many never did (lowest val loss at the end)."""
    turned = [r["turn_epoch"] for r in records if r["val_loss_turned_up"]]
    text = _fmt_ms(turned, pct=False, digits=1) if turned else "never"
    never = len(records) - len(turned)
    return f"{text} ({never} of {len(records)} never turned)" if never and turned else text


def model_costs(variants: dict, names: list[str]) -> dict[str, tuple[int, float]]:
    from ..models import create_model, forward_flops, trainable_params

    costs = {}
    for name in names:
        net = create_model("seed", **variants[name]["options"])
        costs[name] = (trainable_params(net), forward_flops(net) / 1e6)
    return costs


def analyse(out: Path, settings, variants: dict) -> dict:
    records = []
    for variant, lr, seed in settings.plan():
        r = run_record(Path(out) / "runs" / run_name(variant, lr, seed), variant, lr, seed)
        if r is not None:
            records.append(r)
    write_runs_csv(Path(out), records)
    base_lr = settings.lrs[0]
    costs = model_costs(variants, settings.variants)

    def group(variant: str, lr: float = base_lr) -> list[dict]:
        return [r for r in records if r["variant"] == variant and r["lr"] == lr]

    def values(variant: str, key: str, lr: float = base_lr) -> list[float]:
        return [r[key] for r in group(variant, lr)]

    def ready(*names: str, lrs=(base_lr,)) -> bool:
        return all(n in settings.variants and len(group(n, lr)) >= 2 for n in names for lr in lrs)

    variant_rows = []
    for v in settings.variants:
        g = group(v)
        params, mflops = costs[v]
        acc = values(v, "val_accuracy")
        mean_acc = statistics.fmean(acc) if acc else math.nan
        variant_rows.append([
            v, f"{params:,}", f"{mflops:,.1f}", f"{len(g)}/{settings.seeds}", _fmt_ms(acc),
            _fmt_ms(values(v, "test_accuracy")), _fmt_ms(values(v, "gap")), _turn(g),
            _fmt_ms(values(v, "loss_rises"), pct=False, digits=1),
            sum(r["diverged"] for r in g), f"{100 * mean_acc / (params / 1e6):.1f}" if acc else "–",
            f"{100 * mean_acc / (mflops / 1e3):.0f}" if acc else "–"])
    lr_rows = [[v] + [f"{_fmt_ms(values(v, 'val_accuracy', lr))} ({sum(values(v, 'diverged', lr))} div., "
                      f"{sum(values(v, 'collapsed', lr))} at chance)"
                      if group(v, lr) else "–" if lr in settings.lrs_of(v) else "not in the plan"
                      for lr in settings.lrs] for v in settings.variants]

    claims = [_claim_batchnorm(settings, ready, values), _claim_dropout(ready, values, group),
              _claim_filters(ready, values, costs), _claim_classes(ready, group)]
    results = {
        "settings": settings.__dict__, "base_lr": base_lr, "records": records, "claims": claims,
        "variant_header": ["variant", "params", "MFLOPs", "runs", "val accuracy (last epoch)",
                           "test accuracy (lowest-val-loss weights)",
                           "train−val gap (last epoch)", "val-loss turn epoch", "loss rises", "diverged",
                           "val acc points per M params", "val acc points per GFLOP"],
        "variant_rows": variant_rows,
        "lr_header": ["variant"] + [f"lr {lr:g}: val accuracy" for lr in settings.lrs], "lr_rows": lr_rows,
        "variants": {v: variants[v]["about"] for v in settings.variants},
        "costs": costs,  # variant → (trainable parameters, forward MFLOPs)
    }
    results["summary_markdown"] = _claims_markdown(claims)
    return results


def _not_measured(claim: str, needs: str) -> dict:
    return {"claim": claim, "measure": "–", "test": "–", "figures": f"not measured yet: needs {needs}",
            "verdict": INCONCLUSIVE}


def _claim_batchnorm(settings, ready, values) -> dict:
    claim = "Batch Normalization significantly improved training stability"
    if not all(settings.lrs_of(v) == settings.lrs for v in ("seed", "no-batchnorm")):
        return _not_measured(claim, "seed and no-batchnorm in --lr-variants")
    if not ready("seed", "no-batchnorm", lrs=settings.lrs):
        return _not_measured(claim, "≥ 2 finished runs of seed and no-batchnorm at every learning rate")
    comps = [welch(values("seed", "val_accuracy", lr), values("no-batchnorm", "val_accuracy", lr), f"lr {lr:g}")
             for lr in settings.lrs]
    _, adjusted = family_verdicts(comps)
    lines = [f"{c.name}: with − without BatchNorm {_points(c)}{_holm(p)}; diverged "
             f"{sum(values('seed', 'diverged', lr))} vs {sum(values('no-batchnorm', 'diverged', lr))}, stuck at "
             f"chance {sum(values('seed', 'collapsed', lr))} vs {sum(values('no-batchnorm', 'collapsed', lr))}"
             f", loss rises {_fmt_ms(values('seed', 'loss_rises', lr), False, 1)} vs "
             f"{_fmt_ms(values('no-batchnorm', 'loss_rises', lr), False, 1)}"
             for c, p, lr in zip(comps, adjusted, settings.lrs, strict=True)]
    sd = [statistics.stdev(values(v, "val_accuracy")) for v in ("seed", "no-batchnorm")]
    lines.append(f"seed-to-seed spread at lr {settings.lrs[0]:g}: std {sd[0]:.2%} with vs {sd[1]:.2%} without")
    return {"claim": claim,
            "measure": "validation accuracy with and without BatchNorm at each learning rate of the sweep; "
                       "divergences, loss rises and the seed-to-seed spread beside it",
            "test": "Welch's t-test per learning rate, Holm-corrected; supported if BatchNorm is significantly "
                    "better at some learning rate and significantly worse at none",
            "figures": "; ".join(lines), "verdict": any_of(comps)}


def _claim_dropout(ready, values, group) -> dict:
    claim = "Dropout layers (0.5) helped prevent overfitting"
    if not ready("seed", "no-dropout"):
        return _not_measured(claim, "≥ 2 finished runs of seed and no-dropout")
    c = welch(values("no-dropout", "gap"), values("seed", "gap"), "gap without − with dropout")
    acc = welch(values("seed", "val_accuracy"), values("no-dropout", "val_accuracy"))
    figures = (f"train−val gap {_fmt_ms(values('seed', 'gap'))} with Dropout 0.5 vs "
               f"{_fmt_ms(values('no-dropout', 'gap'))} without: without − with {_points(c)}; validation loss "
               f"turns up after epoch {_turn(group('seed'))} vs {_turn(group('no-dropout'))}; val accuracy with − "
               f"without {_points(acc)}")
    if ready("dropout-0.25"):
        figures += (f"; Dropout 0.25: gap {_fmt_ms(values('dropout-0.25', 'gap'))}, val accuracy "
                    f"{_fmt_ms(values('dropout-0.25', 'val_accuracy'))}")
    return {"claim": claim,
            "measure": "gap between train accuracy (eval mode) and validation accuracy at the last epoch; the epoch "
                       "at which validation loss turns up",
            "test": "Welch's t-test on the gap: supported if the gap is significantly smaller with Dropout 0.5",
            "figures": figures, "verdict": verdict(c)}


def _claim_filters(ready, values, costs) -> dict:
    claim = "Increasing the number of filters in deeper layers captured more complex features"
    rivals = ["filters-192-192-192", "filters-256-128-64"]
    if not ready("seed", *rivals):  # "better than both" cannot be judged against one
        return _not_measured(claim, "≥ 2 finished runs of seed, filters-192-192-192 and filters-256-128-64")
    comps = [welch(values("seed", "val_accuracy"), values(v, "val_accuracy"), v) for v in rivals]
    verdicts, adjusted = family_verdicts(comps)
    lines = [f"seed (64/128/256) − {c.name}: {_points(c)}{_holm(p)}" for c, p in zip(comps, adjusted, strict=True)]
    lines += [f"{v}: {costs[v][0] / 1e6:.2f} M params, {costs[v][1]:,.0f} MFLOPs, val accuracy "
              f"{_fmt_ms(values(v, 'val_accuracy'))}" for v in ["seed", *rivals, "filters-64-64-64"] if ready(v)]
    return {"claim": claim,
            "measure": "validation accuracy of growing filters against constant filters of the same parameter "
                       "count and against reversed (decreasing) filters; accuracy per parameter and per FLOP beside it",
            "test": "Welch's t-test against each alternative, Holm-corrected; supported if better than every one",
            "figures": "; ".join(lines), "verdict": all_of(verdicts)}


def _claim_classes(ready, group) -> dict:
    claim = ("best on classes with distinctive features (ships, automobiles), struggled with visually similar "
             "classes (cats, dogs)")
    finished = [Path(r["run"]) for r in group("seed") if math.isfinite(r["test_accuracy"])]
    if len(finished) < 2:
        return _not_measured(claim, "≥ 2 finished runs of seed")
    compared = compare_runs(finished)
    figures = "; ".join(f"{i + 1}. {c['class']} {c['mean']:.1%} ± {c['std']:.1%} (95% interval {c['ci'][0]:.1%}–"
                        f"{c['ci'][1]:.1%})" for i, c in enumerate(compared["per_class"]))
    claim_test = compared["class_claim"]
    return {"claim": claim, "measure": f"per-class test accuracy of the seed model over {len(finished)} seeds",
            "test": "paired over seeds, seed and test-image noise, Holm over the family: ship and automobile each "
                    "above every other class, every other class above cat and dog; supported if all are significant",
            "figures": f"{claim_test['figures']}. Ranking: {figures}", "verdict": claim_test["verdict"]}


def _claims_markdown(claims: list[dict]) -> str:
    from ..evaluation.page import markdown_table

    return markdown_table(["seed's claim", "verdict", "measure", "test", "figures"],
                          [[c["claim"], f"**{c['verdict']}**", c["measure"], c["test"], c["figures"]] for c in claims])


# --- pages ---------------------------------------------------------------------------------------


def _plots(results: dict) -> dict[str, bytes]:
    import matplotlib.pyplot as plt
    import numpy as np

    from ..evaluation.page import STYLE, png_bytes

    records, lrs, base = results["records"], results["settings"]["lrs"], results["base_lr"]
    variants = results["settings"]["variants"]
    colors = dict(zip(variants, plt.get_cmap("tab10").colors, strict=False))
    out = {}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(variants) + 1.2))
        for i, v in enumerate(variants):
            acc = [r["val_accuracy"] for r in records if r["variant"] == v and r["lr"] == base]
            if acc:
                ax.scatter(acc, [i] * len(acc), color=colors[v], alpha=0.6, s=18)
                ax.errorbar(statistics.fmean(acc), i, xerr=statistics.stdev(acc) if len(acc) > 1 else 0,
                            fmt="D", color=colors[v], capsize=4)
        ax.set_yticks(range(len(variants)), variants)
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(f"validation accuracy at lr {base:g} (dots: seeds; diamond: mean ± std)")
        out["val_accuracy.png"] = png_bytes(fig)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for v in variants:
            runs = [r for r in records if r["variant"] == v and r["lr"] == base and not r["diverged"]]
            curves = [read_history(Path(r["run"])) for r in runs]
            n = min((len(c) for c in curves), default=0)
            if not n:
                continue
            ep = np.arange(1, n + 1)
            loss = np.mean([[h["val_loss"] for h in c[:n]] for c in curves], axis=0)
            gap = np.mean([[h["train_eval_accuracy"] - h["val_accuracy"] for h in c[:n]] for c in curves], axis=0)
            axes[0].plot(ep, loss, "o-", ms=3, color=colors[v], label=v)
            axes[1].plot(ep, gap, "o-", ms=3, color=colors[v], label=v)
        axes[0].set_title("validation loss (mean over seeds)")
        axes[1].set_title("train (eval mode) − validation accuracy")
        axes[1].yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(plt.matplotlib.ticker.MaxNLocator(integer=True))
        axes[1].legend(fontsize=8)
        out["curves.png"] = png_bytes(fig)

        if len(lrs) > 1:
            fig, ax = plt.subplots(figsize=(8, 4))
            for v in variants:
                pts = [(lr, [r["val_accuracy"] for r in records if r["variant"] == v and r["lr"] == lr]) for lr in lrs]
                pts = [(lr, a) for lr, a in pts if a]
                if pts:
                    ax.errorbar([p[0] for p in pts], [statistics.fmean(p[1]) for p in pts],
                                yerr=[statistics.stdev(p[1]) if len(p[1]) > 1 else 0 for p in pts],
                                fmt="o-", capsize=3, color=colors[v], label=v)
                div = [r["lr"] for r in records if r["variant"] == v and r["diverged"]]
                if div:
                    ax.scatter(div, [CHANCE] * len(div), marker="x", color=colors[v], s=50)
            ax.set_xscale("log")
            ax.set_xlabel("learning rate (Adam)")
            ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
            ax.set_title("validation accuracy vs learning rate (mean ± std; × = diverged)")
            ax.legend(fontsize=8)
            out["lr_sweep.png"] = png_bytes(fig)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        costs = results["costs"]
        for v in variants:
            acc = [r["val_accuracy"] for r in records if r["variant"] == v and r["lr"] == base]
            if acc:
                for ax, x in zip(axes, costs[v], strict=True):
                    ax.errorbar(x, statistics.fmean(acc), yerr=statistics.stdev(acc) if len(acc) > 1 else 0,
                                fmt="o", capsize=3, color=colors[v], label=v)
        axes[0].set_xlabel("trainable parameters")
        axes[1].set_xlabel("forward MFLOPs per image")
        for ax in axes:
            ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
            ax.set_title("validation accuracy vs cost")
        axes[1].legend(fontsize=8)
        out["efficiency.png"] = png_bytes(fig)
    return out


def _lr_variants_text(names: list[str], base_lr: float) -> str:
    if "all" in names:
        return "every variant"
    return f"{', '.join(f'`{n}`' for n in names)}, the other variants at {base_lr:g} only"


def write_pages(out: Path, results: dict) -> list[Path]:
    """claims.md and claims.html (plots embedded) plus the plots as PNG files, all written atomically."""
    import html

    from ..evaluation.page import CSS, html_table, img_tag, markdown_table

    out = Path(out)
    plots = _plots(results)
    for name, png in plots.items():
        atomic_write(out / name, lambda tmp, png=png: Path(tmp).write_bytes(png))
    s = results["settings"]
    budget = (f"the `{s['recipe']}` recipe, {s['epochs']} epochs on a stratified subset of "
              f"{s['subset'] or 45_000:,} training images, no early stopping, validation on {s['val_size']:,} "
              f"held-out training images; {s['seeds']} seeds per variant; learning rates "
              f"{', '.join(f'{lr:g}' for lr in s['lrs'])} for {_lr_variants_text(s['lr_variants'], results['base_lr'])}"
              f" (every claim but stability is judged at {results['base_lr']:g})")
    claims_header = ["seed's claim", "verdict", "measure", "test", "figures"]
    claims_rows = [[c["claim"], c["verdict"], c["measure"], c["test"], c["figures"]] for c in results["claims"]]
    variants_rows = [[v, about] for v, about in results["variants"].items()]
    md = "\n".join([
        "# The seed's claims, tested", "", f"Budget: {budget}.", "", "## Verdicts", "",
        results["summary_markdown"], "## Variants (options of the `seed` model)", "",
        markdown_table(["variant", "what it tests"], variants_rows),
        f"## Every variant at lr {results['base_lr']:g} (mean ± std over seeds)", "",
        markdown_table(results["variant_header"], results["variant_rows"]),
        "## Learning-rate sweep (validation accuracy, mean ± std; runs that diverged (NaN) or stayed at chance)", "",
        markdown_table(results["lr_header"], results["lr_rows"]),
        "## Plots", "", *[f"![{name}]({name})" for name in plots], "",
        "Every run is a run folder under `runs/`; `runs.csv` lists each run's measures.", ""])
    atomic_write_text(out / "claims.md", md)
    sections = [
        ("Verdicts", html_table(claims_header, claims_rows)),
        ("Variants", html_table(["variant", "what it tests"], variants_rows)),
        (f"Every variant at lr {results['base_lr']:g}", html_table(results["variant_header"], results["variant_rows"])),
        ("Learning-rate sweep", html_table(results["lr_header"], results["lr_rows"])),
        ("Plots", "".join(img_tag(png, name) for name, png in plots.items())),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>cifar10cnn: the seed's claims, tested</title>"
            f"<style>{CSS}</style></head><body><h1>The seed's claims, tested</h1><p>Budget: {html.escape(budget)}."
            f"</p>{body}</body></html>")
    atomic_write_text(out / "claims.html", page)
    return [out / "claims.md", out / "claims.html", out / "runs.csv", *(out / n for n in plots)]
