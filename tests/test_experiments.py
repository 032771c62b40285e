"""ablate and its statistics: variant sizes, verdicts on numbers with known answers, resume, divergence."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cifar10cnn.errors import TrainingDiverged, UserError
from cifar10cnn.experiments.ablate import VARIANTS, AblationSettings, run_ablation, run_name
from cifar10cnn.experiments.claims import analyse, run_record
from cifar10cnn.models import create_model, trainable_params
from cifar10cnn.stats import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    UNTESTABLE,
    all_of,
    any_of,
    family_verdicts,
    holm,
    paired_seed_and_image,
    seed_and_image_interval,
    verdict,
    welch,
)

from .conftest import CLASSES, cli

# --- statistics on numbers with known answers -----------------------------------------------------


def test_welch_matches_the_textbook_formula_and_scipy():
    from scipy import stats

    a, b = [0.80, 0.82, 0.81, 0.83], [0.70, 0.75, 0.72]
    c = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert c.t == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    # Welch–Satterthwaite degrees of freedom by hand
    va, vb = 0.000166667 / 4, 0.000633333 / 3
    assert c.df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2), rel=1e-3)
    assert c.diff == pytest.approx(0.815 - 0.723333, abs=1e-6)
    assert c.ci[0] < c.diff < c.ci[1] and c.ci[0] > 0  # significant: the interval excludes 0


def test_holm_adjusts_like_the_reference_example():
    # Holm (1979) style: sorted p 0.01, 0.02, 0.03, 0.04 × 4, 3, 2, 1, made monotone
    assert holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    # an untestable comparison (NaN) is not part of the family
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


def test_no_spread_is_untestable_not_a_verdict():
    at_chance = welch([0.1, 0.1, 0.1], [0.1, 0.1, 0.1])  # both arms stuck at chance in every seed
    constant = welch([0.8, 0.8, 0.8], [0.7, 0.7, 0.7])  # constant but unequal: no t statistic exists
    for c in (at_chance, constant):
        assert not c.testable and math.isnan(c.p) and verdict(c) == UNTESTABLE
    better = welch([0.80, 0.81, 0.82], [0.70, 0.71, 0.72])
    assert all_of([UNTESTABLE, UNTESTABLE]) == UNTESTABLE
    assert any_of([at_chance, better]) == SUPPORTED  # supported where it can be tested, contradicted nowhere
    assert any_of([at_chance, at_chance]) == UNTESTABLE


def test_the_too_small_rule_uses_the_same_family_as_significance():
    # tightly measured, a hair apart: alone, the 95% interval lies below +0.5 points ("too small to matter")...
    close = welch([0.8000, 0.8010, 0.8020], [0.7985, 0.7995, 0.8005])
    assert close.ci[1] < 0.005 and verdict(close) == NOT_SUPPORTED
    # ...but as one of 20 comparisons its Bonferroni interval (99.75%) reaches past 0.5 points: no verdict
    assert close.interval(1 - 0.05 / 20)[1] > 0.005
    noise = [welch([0.5, 0.6, 0.7], [0.5, 0.6, 0.7 + i / 100]) for i in range(19)]
    verdicts, adjusted = family_verdicts([close, *noise])
    assert verdicts[0] == INCONCLUSIVE and adjusted[0] == pytest.approx(1.0)


def test_seed_and_image_interval_by_hand():
    from scipy import stats

    values = [0.60, 0.65, 0.71]  # one class, 3 seeds, 1,000 test images
    mean = sum(values) / 3
    seed_var = stats.tvar(values) / 3
    var = seed_var + mean * (1 - mean) / 1000
    df = var**2 / (seed_var**2 / 2)
    lo, hi = seed_and_image_interval(values, 1000)
    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    assert (lo, hi) == pytest.approx((mean - half, mean + half))
    # wider than the seed spread alone (which ignores the images) and than "n = 3,000" pooling (which ignores seeds)
    pooled = 1.96 * math.sqrt(mean * (1 - mean) / 3000)
    assert hi - mean > pooled * 3
    # identical seeds: only the images' binomial noise is left (normal quantile)
    lo, hi = seed_and_image_interval([0.9, 0.9, 0.9], 1000)
    assert hi - 0.9 == pytest.approx(1.959964 * math.sqrt(0.09 / 1000), rel=1e-4)


def test_paired_comparison_uses_the_per_seed_differences():
    # b is always 2 points below a although both move a lot between seeds: pairing sees a steady gap
    a, b = [0.60, 0.70, 0.80], [0.58, 0.68, 0.78]
    paired = paired_seed_and_image(a, b, 100_000, 100_000)
    assert paired.diff == pytest.approx(0.02) and paired.p < 0.001
    assert welch(a, b).p > 0.5  # unpaired, the seed-to-seed swings hide it


@pytest.mark.parametrize("a, b, expected", [
    ([0.80, 0.81, 0.82], [0.70, 0.71, 0.72], SUPPORTED),            # clearly better
    ([0.70, 0.71, 0.72], [0.80, 0.81, 0.82], NOT_SUPPORTED),        # clearly worse
    ([0.800, 0.801, 0.802], [0.799, 0.800, 0.801], NOT_SUPPORTED),  # equal within 0.5 points, tightly measured
    ([0.60, 0.80, 0.70], [0.65, 0.75, 0.70], INCONCLUSIVE),         # noisy: cannot tell
])
def test_verdicts(a, b, expected):
    assert verdict(welch(a, b)) == expected


def test_combining_verdicts():
    assert all_of([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert all_of([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([SUPPORTED, NOT_SUPPORTED]) == NOT_SUPPORTED
    better = welch([0.8, 0.81, 0.82], [0.5, 0.52, 0.51])
    same = welch([0.800, 0.801, 0.800], [0.800, 0.800, 0.801])
    worse = welch([0.5, 0.52, 0.51], [0.8, 0.81, 0.82])
    assert any_of([same, better]) == SUPPORTED  # matters at some learning rate only
    assert any_of([worse, better]) == NOT_SUPPORTED  # contradicted somewhere
    assert any_of([same, same]) == NOT_SUPPORTED


accuracy = st.floats(0.01, 0.99, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracy, min_size=1, max_size=6), st.integers(50, 20_000))
def test_the_seed_and_image_interval_holds_its_mean_and_is_never_narrower_than_either_noise(values, n):
    import statistics

    lo, hi = seed_and_image_interval(values, n)
    mean = statistics.fmean(values)
    assert 0.0 <= lo <= mean <= hi <= 1.0
    if lo == 0.0 or hi == 1.0:
        return  # clipped at the ends of [0, 1]
    image_half = 1.959 * math.sqrt(mean * (1 - mean) / n)  # the test images' noise alone (normal)
    assert (hi - lo) / 2 >= image_half - 1e-9
    if len(values) > 1:  # and wider than the seed spread's own standard error
        assert (hi - lo) / 2 >= statistics.stdev(values) / math.sqrt(len(values)) - 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(p_values):
    adjusted = holm(p_values)
    assert all(a >= p - 1e-12 and a <= 1.0 for a, p in zip(adjusted, p_values, strict=True))
    for i, j in itertools.product(range(len(p_values)), repeat=2):
        if p_values[i] < p_values[j]:
            assert adjusted[i] <= adjusted[j]


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracy, min_size=2, max_size=5), st.lists(accuracy, min_size=2, max_size=5))
def test_swapping_the_arms_swaps_the_verdict(a, b):
    forward, backward = verdict(welch(a, b)), verdict(welch(b, a))
    if forward == SUPPORTED:
        assert backward == NOT_SUPPORTED
    if forward in (INCONCLUSIVE, UNTESTABLE):
        assert backward in (forward, NOT_SUPPORTED)


# --- variants ---------------------------------------------------------------------------------------


def _seed_params(filters, batchnorm=True) -> int:
    """Trainable parameters of the seed architecture, counted by hand from SEED.md's layer list."""
    total, c_in = 0, 3
    for f in filters:
        total += c_in * f * 9 + f + (2 * f if batchnorm else 0)
        c_in = f
    return total + (4 * 4 * c_in * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)


def test_variant_parameter_counts():
    expected = {"seed": 1_454_730, "no-batchnorm": _seed_params([64, 128, 256], batchnorm=False),
                "no-dropout": 1_454_730, "dropout-0.25": 1_454_730,
                "filters-192-192-192": _seed_params([192] * 3), "filters-64-64-64": _seed_params([64] * 3),
                "filters-256-128-64": _seed_params([256, 128, 64])}
    assert set(expected) == set(VARIANTS)
    for name, v in VARIANTS.items():
        assert trainable_params(create_model("seed", **v["options"])) == expected[name], name
    assert _seed_params([64, 128, 256]) == 1_454_730
    # the constant variant meant to match the seed's size does (within 3%)
    assert abs(expected["filters-192-192-192"] / 1_454_730 - 1) < 0.03
    dropouts = [m.p for m in create_model("seed", **VARIANTS["dropout-0.25"]["options"]).modules()
                if m.__class__.__name__ == "Dropout"]
    assert dropouts == [0.25, 0.25]


# --- claims on synthetic run folders with known answers -----------------------------------------------


def _fake_run(run_dir: Path, val_acc: float, gap: float, epochs: int = 4, diverged: bool = False,
              per_class: dict | None = None) -> None:
    """A run folder as train() leaves it: history.csv (+ metrics.json, or diverged.json)."""
    run_dir.mkdir(parents=True)
    rows = []
    for e in range(1, epochs + 1):
        va = val_acc - 0.02 * (epochs - e)  # rising to val_acc at the last epoch
        rows.append({"epoch": e, "train_loss": 2.0 / e, "train_accuracy": va + gap, "val_loss": 1.0 + abs(e - 3) * 0.1,
                     "val_accuracy": va, "lr": 1e-3, "seconds": 1.0, "images_per_s": 100.0,
                     "train_eval_loss": 0.5, "train_eval_accuracy": va + gap})
    if rows:  # a run that diverged in its first epoch has no history
        with (run_dir / "history.csv").open("w") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if diverged:
        (run_dir / "diverged.json").write_text('{"message": "loss became nan"}')
        return
    per_class = per_class or dict.fromkeys(CLASSES, val_acc)
    cm = [[0] * 10 for _ in range(10)]
    for i, c in enumerate(CLASSES):
        right = round(per_class[c] * 1000)
        cm[i][i], cm[i][(i + 1) % 10] = right, 1000 - right
    (run_dir / "metrics.json").write_text(json.dumps({
        "test_accuracy": val_acc, "best_epoch": 3, "per_class_accuracy": per_class, "confusion_matrix": cm}))


def test_the_plan_sweeps_learning_rates_for_the_stability_pair_only_unless_asked(tmp_path):
    default = AblationSettings().validate()
    assert len(default.plan()) == (2 * 3 + 5 * 1) * 3  # seed and no-batchnorm at 3 lrs, 5 variants at the first
    assert {lr for v, lr, _ in default.plan() if v == "no-dropout"} == {1e-3}
    assert {lr for v, lr, _ in default.plan() if v == "no-batchnorm"} == {1e-3, 3e-3, 1e-2}
    assert len(AblationSettings(lr_variants=["all"]).plan()) == 7 * 3 * 3
    with pytest.raises(UserError, match="unknown --lr-variants wide; valid: all, seed"):
        AblationSettings(lr_variants=["wide"]).validate()
    # without the pair in the sweep the stability claim says what it needs instead of judging
    results = analyse(tmp_path, AblationSettings(variants=["seed", "no-batchnorm"], lr_variants=["seed"]),
                      VARIANTS)
    assert "seed and no-batchnorm in --lr-variants" in results["claims"][0]["figures"]
    assert results["lr_rows"][1][2] == "not in the plan"


def test_claims_on_synthetic_runs_with_known_answers(tmp_path):
    settings = AblationSettings(variants=["seed", "no-batchnorm", "no-dropout", "filters-192-192-192",
                                          "filters-256-128-64"], seeds=3, lrs=[1e-3, 1e-2], epochs=4)
    # seed: val 0.70 at lr 1e-3 (val at the kept epoch 3 = 0.68), 0.60 at 1e-2; no BN: equal at 1e-3, diverges at 1e-2
    # dropout: gap 0.05 with, 0.25 without; filters: seed clearly better than both rivals
    classes = {**dict.fromkeys(CLASSES, 0.6), "ship": 0.9, "automobile": 0.88, "cat": 0.3, "dog": 0.35}
    noise = [0.0, 0.004, -0.004]
    for s, n in enumerate(noise):
        for lr, acc in ((1e-3, 0.70), (1e-2, 0.60)):
            _fake_run(tmp_path / "runs" / run_name("seed", lr, s), acc + n, 0.05 + n, per_class=classes)
            _fake_run(tmp_path / "runs" / run_name("no-batchnorm", lr, s), acc + n * 1.1, 0.05,
                      diverged=lr == 1e-2, epochs=4 if lr == 1e-3 else 0)
            _fake_run(tmp_path / "runs" / run_name("no-dropout", lr, s), acc + n, 0.25 + n)
            _fake_run(tmp_path / "runs" / run_name("filters-192-192-192", lr, s), acc - 0.05 + n, 0.05)
            _fake_run(tmp_path / "runs" / run_name("filters-256-128-64", lr, s), acc - 0.08 + n, 0.05)
    results = analyse(tmp_path, settings, VARIANTS)
    verdicts = {c["claim"].split()[0]: c["verdict"] for c in results["claims"]}
    assert verdicts == {"Batch": SUPPORTED, "Dropout": SUPPORTED, "Increasing": SUPPORTED, "best": SUPPORTED}
    stability = results["claims"][0]["figures"]
    assert "diverged 0 vs 3" in stability and "lr 0.01" in stability
    records = {(r["variant"], r["lr"], r["seed"]): r for r in results["records"]}
    r = records[("seed", 1e-3, 0)]
    # the last epoch's validation accuracy (no early stopping: nothing chosen on this split); the test figure is
    # the kept (lowest-val-loss) epoch's
    assert r["val_accuracy"] == pytest.approx(0.70) and r["test_epoch"] == 3
    assert r["gap"] == pytest.approx(0.05) and r["turn_epoch"] == 3 and r["val_loss_turned_up"]
    assert records[("no-batchnorm", 1e-2, 0)]["diverged"] and records[("no-batchnorm", 1e-2, 0)]["val_accuracy"] == 0.1
    assert not any(r["collapsed"] for r in records.values())  # diverged is not "stuck at chance"
    stuck = tmp_path / "stuck"
    _fake_run(stuck, 0.1, 0.0)  # ends at 10%, no NaN: the loss sat at ln 10
    assert run_record(stuck, "seed", 1e-2, 0)["collapsed"]

    # the same runs with the dropout effect removed and the class ranking broken
    for s, n in enumerate(noise):
        for lr in (1e-3, 1e-2):
            for v in ("no-dropout", "seed"):
                d = tmp_path / "runs" / run_name(v, lr, s)
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
                _fake_run(d, 0.70 + n, 0.05 + n / 10, per_class=dict.fromkeys(CLASSES, 0.6) | {"cat": 0.9})
    results = analyse(tmp_path, settings, VARIANTS)
    verdicts = {c["claim"].split()[0]: c["verdict"] for c in results["claims"]}
    assert verdicts["Dropout"] == NOT_SUPPORTED  # same gap, tightly measured
    assert verdicts["best"] == NOT_SUPPORTED  # cat ranks first


def test_the_filters_claim_refuses_to_judge_against_one_rival(tmp_path):
    settings = AblationSettings(variants=["seed", "filters-192-192-192", "filters-256-128-64"], seeds=3, lrs=[1e-3],
                                epochs=4)
    for s, n in enumerate([0.0, 0.004, -0.004]):
        _fake_run(tmp_path / "runs" / run_name("seed", 1e-3, s), 0.70 + n, 0.05)
        _fake_run(tmp_path / "runs" / run_name("filters-192-192-192", 1e-3, s), 0.60 + n, 0.05)
    claim = analyse(tmp_path, settings, VARIANTS)["claims"][2]  # "better than both": one rival finished
    assert claim["verdict"] == INCONCLUSIVE and "not measured yet" in claim["figures"]


def test_runs_that_never_turned_are_reported_apart(tmp_path):
    from cifar10cnn.experiments.claims import _turn

    for s, epochs in enumerate([4, 4, 3]):  # val loss is lowest at epoch 3: the 3-epoch run never turned up
        _fake_run(tmp_path / f"r{s}", 0.7, 0.05, epochs=epochs)
    records = [run_record(tmp_path / f"r{s}", "seed", 1e-3, s) for s in range(3)]
    assert [r["val_loss_turned_up"] for r in records] == [True, True, False]
    assert _turn(records) == "3.0 ± 0.0 (1 of 3 never turned)"
    assert _turn(records[2:]) == "never"


def test_the_per_class_claim_is_tested_across_seeds():
    from cifar10cnn.evaluation.compare import class_claim

    others = {"airplane": [0.80, 0.82, 0.81], "bird": [0.66, 0.70, 0.68], "deer": [0.68, 0.78, 0.75],
              "frog": [0.76, 0.85, 0.81], "horse": [0.82, 0.86, 0.83], "truck": [0.85, 0.89, 0.87]}
    images = dict.fromkeys([*others, "ship", "automobile", "cat", "dog"], 1000)
    clear = {**others, "ship": [0.95, 0.96, 0.95], "automobile": [0.96, 0.95, 0.96], "cat": [0.40, 0.42, 0.41],
             "dog": [0.45, 0.44, 0.46]}
    result = class_claim(clear, images)
    # 2 easy × 8 others + 8 others × 2 hard, less the 4 easy-vs-hard pairs counted twice
    assert result["verdict"] == SUPPORTED and len(result["pairs"]) == 2 * 8 + 8 * 2 - 4
    # the real seed model's shape: dog moves 60–71% between seeds and overlaps bird and deer: no verdict, and the
    # weakest pair is named with how often it held
    real = {**others, "ship": [0.84, 0.90, 0.90], "automobile": [0.86, 0.88, 0.90], "cat": [0.65, 0.67, 0.68],
            "dog": [0.60, 0.71, 0.62]}
    result = class_claim(real, images)
    assert result["verdict"] == INCONCLUSIVE and "the weakest:" in result["figures"]
    # a named-hard class that beats a named-easy one, steadily, contradicts the claim
    broken = {**clear, "cat": [0.97, 0.98, 0.97]}
    result = class_claim(broken, images)
    assert result["verdict"] == NOT_SUPPORTED and "cat above truck" in result["figures"]
    assert class_claim(others, images)["verdict"] == UNTESTABLE  # no class of that name


def test_compare_prints_seed_aware_intervals_and_the_claims_verdict(tmp_path, capsys):
    from cifar10cnn.evaluation.compare import compare_runs

    runs = []
    for s, dog in enumerate([0.60, 0.71, 0.62]):
        per_class = {**dict.fromkeys(CLASSES, 0.8), "ship": 0.9, "automobile": 0.89, "cat": 0.66, "dog": dog}
        _fake_run(tmp_path / f"seed{s}", 0.78, 0.05, per_class=per_class)
        runs.append(tmp_path / f"seed{s}")
    result = compare_runs(runs)
    dog = next(c for c in result["per_class"] if c["class"] == "dog")
    assert dog["images"] == 1000 and dog["min"] == 0.60 and dog["max"] == 0.71
    assert dog["ci"][0] < 0.55 and dog["ci"][1] > 0.75  # the seed spread (std 5.9 points, 3 seeds) is in it
    assert result["class_claim"]["verdict"] == INCONCLUSIVE
    assert cli("compare", *runs) == 0
    out = capsys.readouterr().out
    assert "95% interval (seeds + test images)" in out and "per-class claim" in out and "inconclusive" in out
    assert compare_runs(runs[:1])["class_claim"] is None  # one run: nothing to test across seeds


def test_claims_wait_for_missing_runs(tmp_path):
    settings = AblationSettings(variants=["seed"], seeds=2, lrs=[1e-3], epochs=2)
    results = analyse(tmp_path, settings, VARIANTS)
    assert all(c["verdict"] == INCONCLUSIVE and "not measured yet" in c["figures"] for c in results["claims"])


# --- the command: real training on a few images, resume, divergence, refusals ---------------------------


TINY = dict(seeds=2, lrs=[1e-3], subset=100, epochs=2, val_size=100, train_eval_images=100)


def test_ablate_trains_resumes_and_skips_finished_runs(tmp_path, data, monkeypatch):
    out = tmp_path / "ablation"
    settings = AblationSettings(variants=["seed", "no-dropout"], **TINY)
    results = run_ablation(out, settings, data=data)
    assert len(results["records"]) == 4
    for f in ("claims.md", "claims.html", "runs.csv", "val_accuracy.png", "curves.png", "efficiency.png"):
        assert (out / f).stat().st_size > 0, f
    html = (out / "claims.html").read_text()
    assert "Dropout layers (0.5) helped prevent overfitting" in html and "data:image/png;base64," in html
    history = list(csv.DictReader((out / "runs" / run_name("seed", 1e-3, 0) / "history.csv").open()))
    assert len(history) == 2 and 0 <= float(history[-1]["train_eval_accuracy"]) <= 1

    # a second call trains nothing; an interrupted run (no metrics.json yet) is resumed, alone
    (out / "runs" / run_name("no-dropout", 1e-3, 1) / "metrics.json").unlink()
    calls = []
    from cifar10cnn.training import engine as run_module

    real_train = run_module.train

    def spy(cfg, run_dir, **kw):
        calls.append((Path(run_dir).name, kw.get("resume")))
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(run_module, "train", spy)
    run_ablation(out, AblationSettings(variants=["seed", "no-dropout"], **TINY), data=data)
    assert calls == [(run_name("no-dropout", 1e-3, 1), True)]
    assert (out / "runs" / run_name("no-dropout", 1e-3, 1) / "metrics.json").is_file()

    # other settings in the same folder are refused, in one line, and nothing is touched
    before = (out / "experiment.json").read_text()
    assert cli("ablate", "--out", out, "--seeds", "2", "--lrs", "1e-3", "--subset", "200", "--epochs", "2",
               "--variants", "seed", "no-dropout") == 2
    assert (out / "experiment.json").read_text() == before


def test_a_diverged_run_is_recorded_and_not_rerun(tmp_path, data, monkeypatch):
    from cifar10cnn.training import engine as run_module

    real = run_module.train

    def train(cfg, run_dir, **kw):
        if cfg.model_options.get("batchnorm") is False:
            Path(run_dir).mkdir(parents=True)
            raise TrainingDiverged("training diverged in epoch 1: loss became nan")
        return real(cfg, run_dir, **kw)

    monkeypatch.setattr(run_module, "train", train)
    out = tmp_path / "ablation"
    results = run_ablation(out, AblationSettings(variants=["seed", "no-batchnorm"], **TINY), data=data)
    diverged = [r for r in results["records"] if r["diverged"]]
    assert len(diverged) == 2 and all(r["val_accuracy"] == 0.1 for r in diverged)
    assert (out / "runs" / run_name("no-batchnorm", 1e-3, 0) / "diverged.json").is_file()
    monkeypatch.setattr(run_module, "train", lambda *a, **k: pytest.fail("a finished or diverged run was rerun"))
    run_ablation(out, AblationSettings(variants=["seed", "no-batchnorm"], **TINY), data=data)


def test_ablate_rejects_bad_input(tmp_path, capsys):
    assert cli("ablate", "--out", tmp_path / "a", "--variants", "seed", "wide") == 2
    assert "unknown variant(s) wide; valid: seed, no-batchnorm" in capsys.readouterr().err
    assert cli("ablate", "--out", tmp_path / "a", "--seeds", "1") == 2
    assert cli("ablate", "--out", tmp_path / "a", "--lrs", "0") == 2
    assert cli("ablate", "--out", tmp_path / "a", "--subset", "5") == 2
    assert "--subset must be between 10 and 45,000" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing written for settings that cannot run
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert cli("ablate", "--out", tmp_path / "b") == 2
    assert "not empty and holds no ablation" in capsys.readouterr().err
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="--epochs must be at least 2"):
        AblationSettings(epochs=1).validate()
    assert cli("ablate", "--list") == 0
    assert "filters-256-128-64" in capsys.readouterr().out
