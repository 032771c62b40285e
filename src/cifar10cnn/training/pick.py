"""`cifar10cnn train --time-budget M` without `--recipe`: the recipe expected to give the best test accuracy in M
minutes on this machine, and why.

For every recipe with a measured curve in frontier.json:
    epochs it fits   its speed measured here and now (a quick probe at its batch size: one batch of ≤ 128 images
                     warms up, then at least 1,024 images are timed, then an evaluation pass of as many; the
                     candidates share the split's channel statistics), laid out as the time budget lays out a run,
                     once every candidate is probed: the time spent choosing, validation after every epoch, the
                     final test pass with its TTA views (whole epochs, and the last may end at a quarter of one:
                     budget.fit_speed). The chosen recipe's run plans from its probe (it does not measure again)
                     and re-plans while it goes (budget.replan). Each row says what its probe took ("probe_seconds")
    expected         its test accuracy (with its TTA) after that many epochs of a `--time-budget` run (the rows'
                     "expected_test_accuracy_tta_at_epochs"; files kept before 2026-11-29 have
                     "expected_test_accuracy_tta": the same for a recipe that fits, chance for one that does not), from
                     frontier.json: means of kept CIFAR-10 runs (benchmarks/frontier.py curves writes it),
                     linear between measured epochs (from chance at 0), flat past the last one (no credit for
                     epochs never measured)
A recipe declared never quicker than another (NEVER_QUICKER_THAN: `fast95`, the `fast` model wider) is probed last,
and not at all when the other's epochs would not lift it above the best expectation so far (at 20 minutes on a
2-core Zen 4, `fast` fits about 11 epochs, where `fast95`'s curve gives 93.86% and `fast`'s 94.25%).
The recipe whose epochs fit with the highest expected accuracy wins; when none fits a quarter of an epoch, the
quickest, or the one expected to do best after its quarter of those as quick within a probe's noise (PROBE_NOISE:
at 2 minutes on a 2-core AMD EPYC, `seed-aug` read 146 s and `resnet` 149, and `seed-aug`'s quarter gives 14%).
On another data set the CIFAR-10 figures rank the recipes; they do not predict its accuracy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import RunConfig
from ..data.dataset import ImageDataset, channel_stats, make_split
from ..errors import UserError
from ..runtime import resolve_runtime
from .budget import epochs_of, epochs_text, fit_speed, measure_speed
from .parts import build_model, build_parts, resident_data

FRONTIER_FILE = Path(__file__).resolve().parents[1] / "frontier.json"
PROBE_IMAGES = 1024  # 256 (two batches of 128) read resnet at 386 img/s where its epochs ran at 315-330
PROBE_NOISE = 1.05  # plans this close are as quick (one recipe's probes here: seed-aug 324 and 387 img/s)
EXPECTED = "expected_test_accuracy_tta_at_epochs"  # a row's expected figure after the epochs it would train
# A recipe that cannot train faster than another: the same model, wider, at the same batch size with the same test
# views, so more FLOPs per image for the same steps and passes (tests/test_frontier.py checks each pair). It fits at
# most that one's epochs here, so when its curve at those epochs is no better than the best expectation of the
# recipes probed, it is not probed: `fast95`'s probe is ~10 s on a 2-core Zen 4, a sixth of a 1-minute budget.
NEVER_QUICKER_THAN = {"fast95": "fast"}


def read_frontier(path: Path = FRONTIER_FILE) -> dict[str, list[dict]]:
    """{recipe: [{"epochs", "test_accuracy_tta", "runs", "sources"}, ...] sorted by epochs}."""
    recipes = json.loads(path.read_text())["recipes"]
    return {name: sorted(r["points"], key=lambda p: p["epochs"]) for name, r in recipes.items()}


def expected_accuracy(points: list[dict], epochs: float, n_classes: int = 10) -> float:
    """The measured curve at `epochs`: linear between measured points, from chance (1/n_classes) at 0 epochs,
    the last measured figure past the last point."""
    xs = [(0, 1.0 / n_classes)] + [(p["epochs"], p["test_accuracy_tta"]) for p in points]
    if epochs >= xs[-1][0]:
        return xs[-1][1]
    for (e0, a0), (e1, a1) in zip(xs, xs[1:], strict=False):
        if e0 <= epochs <= e1:
            return a0 + (a1 - a0) * (epochs - e0) / (e1 - e0)
    return xs[0][1]


def probe(cfg: RunConfig, data: ImageDataset, stats: dict | None = None) -> dict:
    """This machine's speed for `cfg` (budget.measure_speed), from a quick probe of a fresh copy of its model. The
    chosen recipe's run lays its plan from its probe: it is not measured twice. stats: {split: its training images'
    channel statistics}, filled and shared by the candidates (the same split's are computed once, not ~2 s each)."""
    runtime = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    split = make_split(data.train_y, cfg.val_size, cfg.split_seed, cfg.subset, len(data.classes), data.val_idx)
    key = (cfg.val_size, cfg.split_seed, cfg.subset)
    if stats is not None and key not in stats:
        stats[key] = channel_stats(data.train_x[split.train_idx])
    model, _ = build_model(cfg, data, split, runtime, (stats or {}).get(key))
    parts = build_parts(cfg, model, runtime)
    r = resident_data(cfg, data, split, runtime, model)
    return measure_speed(cfg, parts.step_model, parts.optimizer, runtime, r.train_x, r.train_y, r.train_idx,
                         len(r.val_y) + len(r.sample_y), len(data.test_y), parts.augment, PROBE_IMAGES)


def plan_row(name: str, points: list[dict], speed: dict, probe_s: float, minutes: float, spent: float,
             n_classes: int) -> dict:
    """A probed recipe's row: the epochs it fits after `spent` seconds (budget.fit_speed) and its expected accuracy
    after them."""
    n = speed["steps_per_epoch"]
    steps, planned_s = fit_speed(minutes * 60, spent, speed, n)
    epochs = epochs_of(steps, n)
    return {"recipe": name, "train_images_per_s": round(speed["train_images_per_s"], 1),
            "probe_seconds": round(probe_s, 1), "epochs": epochs, "fits": planned_s <= minutes * 60,
            "planned_seconds": round(planned_s, 1), EXPECTED: round(expected_accuracy(points, epochs, n_classes), 4),
            "measured_epochs": [p["epochs"] for p in points]}


def cannot_win(name: str, points: list[dict], plans: list[dict], n_classes: int) -> str | None:
    """Why `name` need not be probed (NEVER_QUICKER_THAN), or None: the recipe it is never quicker than, planned
    now, fits no quarter of an epoch, or its epochs would give `name` no more than the best expectation so far."""
    bound = next((r for r in plans if r["recipe"] == NEVER_QUICKER_THAN.get(name)), None)
    if bound is None:
        return None
    if not bound["fits"]:
        return f"no quicker than {bound['recipe']}, which fits no quarter of an epoch"
    best = max((r for r in plans if r["fits"]), key=lambda r: r[EXPECTED])
    ceiling = expected_accuracy(points, bound["epochs"], n_classes)
    if ceiling > best[EXPECTED]:
        return None
    return (f"no quicker than {bound['recipe']}, which fits {epochs_text(bound['epochs'])}: at most {ceiling:.1%} "
            f"expected after them, not above {best['recipe']}'s {best[EXPECTED]:.1%}")


def pick_recipe(minutes: float, overrides: dict, data: ImageDataset, started: float) -> dict:
    """{"recipe": the choice, "why": one line, "rows": every candidate's plan and expectation, "seconds": spent,
    "speed": the chosen recipe's probe, which its run plans from (engine.train's `speed`)}. overrides: the user's
    flags, applied to every candidate; started: perf_counter() when the run's work began. A recipe of
    NEVER_QUICKER_THAN is probed after the others, and only if it could win (cannot_win)."""
    frontier = read_frontier()
    n_classes = len(data.classes)
    probed: list[tuple[str, list[dict], dict, float]] = []
    rows, stats = [], {}
    for name in sorted(frontier, key=lambda n: n in NEVER_QUICKER_THAN):  # the quicker ones first
        points = frontier[name]
        if name in NEVER_QUICKER_THAN:
            spent = time.perf_counter() - started
            skip = cannot_win(name, points, [plan_row(*p, minutes, spent, n_classes) for p in probed], n_classes)
        else:
            skip = None
        if skip:
            rows.append({"recipe": name, "skipped": skip, "measured_epochs": [p["epochs"] for p in points]})
            continue
        try:
            t0 = time.perf_counter()
            cfg = RunConfig.resolve(name, {**overrides, "time_budget": minutes})
            probed.append((name, points, probe(cfg, data, stats), time.perf_counter() - t0))
        except UserError as e:  # e.g. a model that cannot take the folder's image size
            rows.append({"recipe": name, "excluded": str(e)})
    spent = time.perf_counter() - started  # every candidate is probed before the chosen run starts
    rows += [plan_row(*p, minutes, spent, n_classes) for p in probed]  # planned as the run will plan itself
    rows.sort(key=lambda r: list(frontier).index(r["recipe"]))
    usable = [r for r in rows if "fits" in r]
    if not usable:
        raise UserError("no recipe with a measured frontier can train this data set: " +
                        "; ".join(f"{r['recipe']}: {r['excluded']}" for r in rows if "excluded" in r))
    fitting = [r for r in usable if r["fits"]]
    if fitting:
        best = max(fitting, key=lambda r: (r[EXPECTED], r["train_images_per_s"]))
        why = (f"expected {best[EXPECTED]:.1%} test accuracy (its TTA) after "
               f"{epochs_text(best['epochs'])} at {best['train_images_per_s']:,.0f} img/s measured here")
    else:  # every one overruns: the least, or as good as (within a probe's noise), with the best expectation
        quickest = min(r["planned_seconds"] for r in usable)
        best = max((r for r in usable if r["planned_seconds"] <= quickest * PROBE_NOISE),
                   key=lambda r: (r[EXPECTED], -r["planned_seconds"]))
        why = (f"no recipe fits a quarter of an epoch in {minutes:g} min here; {best['recipe']} is "
               + ("the quickest" if best["planned_seconds"] == quickest else
                  f"within {PROBE_NOISE - 1:.0%} of the quickest")
               + f" (~{best['planned_seconds']:.0f} s for a quarter of an epoch and the test pass), expected "
                 f"{best[EXPECTED]:.1%} after it")
    speed = next(speed for name, _, speed, _ in probed if name == best["recipe"])
    return {"minutes": minutes, "recipe": best["recipe"], "why": why, "rows": rows,
            "seconds": round(time.perf_counter() - started, 2),
            "speed": {k: round(v, 2) if isinstance(v, float) else v for k, v in speed.items()}}


def pick_lines(picked: dict) -> list[str]:
    """The choice and its reasons, one line per candidate, for the console."""
    lines = [f"time budget {picked['minutes']:g} min without --recipe: each recipe's speed measured here "
             f"({picked['seconds']:.0f} s), its accuracy from kept CIFAR-10 runs (frontier.json)"]
    for r in picked["rows"]:
        if "excluded" in r:
            lines.append(f"  {r['recipe']:<10} cannot train this data set: {r['excluded']}")
        elif "skipped" in r:
            lines.append(f"  {r['recipe']:<10} not probed: {r['skipped']}")
        elif not r["fits"]:
            lines.append(f"  {r['recipe']:<10} {r['train_images_per_s']:>7,.0f} img/s  not a quarter of an epoch in "
                         f"the budget (~{r['planned_seconds']:.0f} s with the test pass; expected "
                         f"{r[EXPECTED]:.1%} after it)")
        else:
            measured = ", ".join(str(e) for e in r["measured_epochs"])
            lines.append(f"  {r['recipe']:<10} {r['train_images_per_s']:>7,.0f} img/s  "
                         f"{epochs_text(r['epochs'], 'fit', 4)}  "
                         f"expected {r[EXPECTED]:.1%}  (measured at {measured} epochs)")
    lines.append(f"→ {picked['recipe']}: {picked['why']} (an explicit --recipe overrides the choice)")
    return lines
