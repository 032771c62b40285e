"""The accuracy-per-CPU-minute frontier: Muon for the filters (fast-muon), FLOP counting and the attainable rate
(bench --flops), and `--time-budget` without `--recipe` picking the recipe from measured curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cifar10cnn.config import RunConfig
from cifar10cnn.data.dataset import channel_stats
from cifar10cnn.errors import UserError
from cifar10cnn.flops import attainable_gflops, model_flops
from cifar10cnn.models import build_classifier, create_model, parameter_roles
from cifar10cnn.runtime import resolve_runtime
from cifar10cnn.training import pick
from cifar10cnn.training.engine import train
from cifar10cnn.training.muon import MuonSGD, orthogonalise
from cifar10cnn.training.parts import make_optimizer

from .conftest import StopAfter, cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (24, 24)])
def test_newton_schulz_pushes_every_singular_value_towards_one(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, v = torch.linalg.qr(torch.randn(shape[0], k))[0], torch.linalg.qr(torch.randn(shape[1], k))[0]
    g = 50 * u @ torch.diag(torch.logspace(-1, 1, k)) @ v.T  # singular values 5 … 500
    s = torch.linalg.svdvals(orthogonalise(g, steps=5))
    assert s.min() > 0.6 and s.max() < 1.25  # all about 1: the step has no scale of its own
    assert orthogonalise(g).shape == g.shape


def test_muon_steps_filters_at_a_fixed_norm_and_sgd_groups_exactly_as_torch_sgd():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(8, 4, 3, 3)), torch.nn.Parameter(torch.randn(8))
    b_ref = torch.nn.Parameter(b.detach().clone())
    opt = MuonSGD([{"params": [w], "lr": 0.1, "momentum": 0.6, "weight_decay": 0.0, "muon": True},
                   {"params": [b], "lr": 0.05, "momentum": 0.85, "weight_decay": 1e-3, "muon": False}])
    ref = torch.optim.SGD([b_ref], lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3)
    for _ in range(3):
        before = w.detach().clone()
        w.grad, b.grad = torch.randn_like(w), torch.randn_like(b)
        b_ref.grad = b.grad.clone()
        opt.step()
        ref.step()
        # the update is an orthogonalised direction of size lr on a filter renormalised to sqrt(out channels)
        step = w.detach() - before * (8 ** 0.5 / before.norm())
        assert 0.5 * 0.1 < torch.linalg.matrix_norm(step.reshape(8, -1), ord=2) < 1.3 * 0.1
        assert torch.allclose(b, b_ref)
    assert torch.allclose(w.detach().norm(), torch.tensor(8 ** 0.5), rtol=0.2)
    with pytest.raises(ValueError, match="≥ 2-D"):
        MuonSGD([{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.1, "muon": True}])


def test_fast_muon_groups_follow_airbench94_muon():
    cfg = RunConfig.resolve("fast-muon")
    model = create_model("fast", scale=1 / 256)
    opt = make_optimizer(cfg, model, resolve_runtime("cpu", "fp32", True, None), parameter_roles(model))
    assert isinstance(opt, MuonSGD)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g for g in opt.param_groups for p in g["params"]}
    filters = [n for n, p in model.named_parameters() if p.ndim == 4 and p.requires_grad]
    assert len(filters) == 6 and all(by_name[n]["muon"] and by_name[n]["lr"] == pytest.approx(0.24) for n in filters)
    assert all(by_name[n]["momentum"] == 0.6 and by_name[n]["weight_decay"] == 0 for n in filters)
    head, bias, whiten = by_name["head.weight"], by_name["groups.0.norm1.bias"], by_name["whiten.bias"]
    assert not head["muon"] and head["lr"] == pytest.approx(1340) and head["momentum"] == 0.85
    assert bias["lr"] == pytest.approx(106) and whiten["lr"] == pytest.approx(106) and whiten["until_epoch"] == 3
    for g in (head, bias, whiten):  # airbench's decoupled decay of 2e-6 × batch 2,000 per step, for every group
        assert g["lr"] * g["weight_decay"] == pytest.approx(0.004)
    assert "whiten.weight" not in by_name  # fixed from the data


def test_fast_muon_trains_resumes_identically_and_refuses_bad_settings(data, tmp_path):
    cfg = RunConfig.resolve("fast-muon", {"subset": 300, "val_size": 100, "batch_size": 100, "epochs": 3,
                                          "whiten_bias_epochs": 1, "tta": False, "tta_translate": 0})
    full, m = train(cfg, tmp_path / "full", data=data, test=False)  # the validation split only: seconds
    assert m["best_val_accuracy"] > 0.15  # chance is 0.1: it learns from 300 images in 3 steps of Muon
    assert json.loads((full / "config.json").read_text())["config"]["optimizer"] == "muon"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data, hooks=[StopAfter(2)], test=False)
    train(cfg, tmp_path / "cut", data=data, resume=True, test=False)  # the momentum buffers of both kinds return
    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for bad, match in (({"muon_lr": 0}, "muon_lr"), ({"muon_momentum": 1.0}, "muon_momentum")):
        with pytest.raises(UserError, match=match):
            RunConfig.resolve("fast-muon", bad)



@pytest.mark.parametrize("recipe, lr, decay, epochs, pflops", [
    ("fast95", 10.0, 0.0153, 15, 1.39),  # airbench95: 1.39 PFLOPs in all
    ("fast96", 9.0, 0.012, 31, 7.46 * 31 / 40)])  # airbench96: 7.46 PFLOPs for its first version's 40 epochs
def test_fast95_and_fast96_are_airbench95_and_96_rewritten_for_a_mean_loss(recipe, lr, decay, epochs, pflops):
    cfg, fast = RunConfig.resolve(recipe), RunConfig.resolve("fast")
    assert cfg.lr * (1 + 1 / (1 - cfg.momentum)) == pytest.approx(lr)  # airbench's rate per 1,024 examples
    assert cfg.weight_decay == pytest.approx(decay / lr)  # its decoupled decay as torch's coupled one (fast: / 11.5)
    assert (cfg.epochs, cfg.batch_size, cfg.label_smoothing, cfg.norm_lr_scale) == (epochs, 1024, 0.2, 64.0)
    assert (cfg.flip, cfg.tta_translate, cfg.whiten_bias_epochs) == (fast.flip, fast.tta_translate, 3)
    rt = resolve_runtime("cpu", "fp32", True, None)
    net = build_classifier("fast", [0.5] * 3, [0.25] * 3, 10, **cfg.model_options).train()
    # airbench's published FLOPs per training image (its count: 50,000 images per epoch, the test passes too)
    assert model_flops(net, rt)["train"] == pytest.approx(pflops * 1e15 / (epochs * 50_000), rel=0.05)


def test_depth_3_groups_add_a_residual_around_their_last_two_convs():
    from cifar10cnn.models.fast import ConvGroup

    torch.manual_seed(0)
    group, x = ConvGroup(8, 16, "gelu", False, depth=3, bn_momentum=0.1).train(), torch.randn(4, 8, 10, 10)
    assert group.norm1.momentum == group.norm3.momentum == 0.1 and len(group.convs()) == 3
    with torch.no_grad():
        first = group.act(group.norm1(group.pool(group.conv1(x))))
        branch = group.norm3(group.conv3(group.act(group.norm2(group.conv2(first)))))
        assert torch.allclose(group(x), group.act(first + branch), atol=1e-6)
        group.conv3.weight.zero_()  # the branch contributes nothing: what is left is the skip
        assert torch.allclose(group(x), group.act(first), atol=1e-6)
    with pytest.raises(UserError, match="depth must be 2 or 3"):
        create_model("fast", depth=4)


def test_fast96_trains_with_cutout_and_its_deeper_groups(data, tmp_path):
    cfg = RunConfig.resolve("fast96", {"subset": 300, "val_size": 100, "batch_size": 100, "epochs": 2,
                                       "whiten_bias_epochs": 1, "tta": False, "tta_translate": 0})
    assert (cfg.cutout, cfg.crop_padding, cfg.model_options["depth"]) == (12, 4, 3)
    run, m = train(cfg, tmp_path / "r", data=data, test=False)
    weights = load_file(str(run / "model.safetensors"))
    assert weights["net.groups.2.conv3.weight"].shape == (512, 512, 3, 3)
    losses = [float(row.split(",")[1]) for row in (run / "history.csv").read_text().splitlines()[1:]]
    assert m["epochs"] == len(losses) == 2 and all(0 < loss < 10 for loss in losses)

def test_flops_of_fast_match_its_architecture_and_the_attainable_rate_is_measured():
    rt = resolve_runtime("cpu", "fp32", True, None)
    net = build_classifier("fast", [0.5] * 3, [0.25] * 3, 10).train()
    f = model_flops(net, rt)
    assert f["eval"] == pytest.approx(236.3e6, rel=0.01)  # 236 MFLOPs per image, as models/fast.py says
    assert 2.9 < f["train"] / f["eval"] < 3.0  # backward ≈ 2× forward (the fixed whitening stem has no weight grad)
    assert all(p.grad is None for p in net.parameters()) and net.training
    peak = attainable_gflops(rt, min_seconds=0.05)
    assert peak["dtype"] == "float32" and peak["peak"] == max(peak["matmul"], peak["conv"]) > 0


def test_bench_flops_reports_achieved_against_attainable(cifar_dir, capsys):
    assert cli("bench", "--data-dir", cifar_dir, "--train-images", "64", "--eval-images", "100", "--flops",
               "--json", "--precision", "fp32") == 0
    r = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert r["train_gflops_per_image"] == pytest.approx(0.240, abs=0.001)  # the seed model
    assert r["train_gflops_per_s"] == pytest.approx(r["train_gflops_per_image"] * r["train_images_per_s"], rel=0.01)
    assert r["train_fraction_of_peak"] == pytest.approx(
        r["train_gflops_per_s"] / r["attainable_gflops_per_s"]["peak"], abs=0.002)


def test_expected_accuracy_interpolates_measured_epochs_only():
    points = [{"epochs": 2, "test_accuracy_tta": 0.6}, {"epochs": 10, "test_accuracy_tta": 0.9}]
    assert pick.expected_accuracy(points, 0) == pytest.approx(0.1)  # chance
    assert pick.expected_accuracy(points, 1) == pytest.approx(0.35)
    assert pick.expected_accuracy(points, 6) == pytest.approx(0.75)
    assert pick.expected_accuracy(points, 40) == 0.9  # no credit for epochs never measured


def test_frontier_json_is_what_the_kept_runs_say():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert json.loads(pick.FRONTIER_FILE.read_text()) == frontier.curves(ROOT / "benchmarks" / "results")
    for points in pick.read_frontier().values():
        for p in points:
            assert all((ROOT / s).is_file() for s in p["sources"]) and 0.1 < p["test_accuracy_tta"] < 1


def test_the_plot_draws_the_current_run_of_each_budget_not_the_runs_it_replaced(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    folder = ROOT / "benchmarks" / "results" / "frontier" / "amd-epyc-avx2"  # one CPU class's kept runs
    current = {p.name for p in folder.glob("*.json") if frontier.CURRENT.fullmatch(p.name)}
    assert {"budget-resnet-5min.json", "budget-fast-muon-60min.json", "auto-10min.json"} <= current
    assert not current & {"budget-resnet-5min-whole-epochs.json", "auto-10min-first-picker.json",
                          "budget-fast-muon-20min-misread.json", "budget-resnet-60min-last-pace.json"}
    for name in current:  # the one run per recipe and budget that the step writes
        recipe = name.removeprefix("budget-").rsplit("-", 1)[0]
        assert name.startswith("auto-") or recipe in frontier.CANDIDATES
    frontier.plot(folder, tmp_path / "frontier.png")  # drawn from its files, on any CPU
    assert (tmp_path / "frontier.png").read_bytes().startswith(b"\x89PNG")


def _plans(monkeypatch, plans: dict[str, dict]):
    def fake_probe(cfg, data, stats):
        plan = plans[cfg.recipe]
        if isinstance(plan, Exception):
            raise plan
        return {"train_images_per_s": 100.0, "final_eval_s": 10.0, "validation_s": 0.0, "steps_per_epoch": 40,
                "measured_by": "test", **plan}

    monkeypatch.setattr(pick, "probe", fake_probe)
    frontier = {"about": "test", "recipes": {
        "seed-aug": {"points": [{"epochs": 4, "test_accuracy_tta": 0.8}]},
        "fast": {"points": [{"epochs": 1, "test_accuracy_tta": 0.75}, {"epochs": 5, "test_accuracy_tta": 0.92}]}}}
    monkeypatch.setattr(pick, "read_frontier", lambda: {k: v["points"] for k, v in frontier["recipes"].items()})


def test_the_pick_is_the_best_expected_accuracy_among_recipes_that_fit(monkeypatch, data):
    import time

    # 2 minutes, 10 s of test pass: seed-aug fits 4.25 epochs of 25 s (the last ends a quarter in), fast 3 of 35 s
    _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 25}, "fast": {"estimated_epoch_s": 35}})
    p = pick.pick_recipe(2, {}, data, time.perf_counter())
    assert [(r["epochs"], r["fits"]) for r in p["rows"]] == [(4.25, True), (3, True)]
    assert p["recipe"] == "fast" and "83.5%" in p["why"]  # 0.75 + (0.92 − 0.75) / 2 at 3 epochs beats 0.8
    assert p["speed"] == {"train_images_per_s": 100.0, "final_eval_s": 10.0, "validation_s": 0.0,
                          "steps_per_epoch": 40, "measured_by": "test",
                          "estimated_epoch_s": 35}  # the chosen recipe's probe: its run plans from it
    _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 25},
                         "fast": {"estimated_epoch_s": 200}})  # fast fits half an epoch in the 2 minutes
    p = pick.pick_recipe(2, {}, data, time.perf_counter())
    assert p["recipe"] == "seed-aug" and p["rows"][1]["fits"] and p["rows"][1]["epochs"] == 0.5
    assert p["rows"][1][pick.EXPECTED] == pytest.approx(0.1 + (0.75 - 0.1) / 2)  # from chance at 0
    # the time spent before and while choosing counts: 20 s of it leaves seed-aug 3.5 epochs, not 4.25
    assert pick.pick_recipe(2, {}, data, time.perf_counter() - 20)["rows"][0]["epochs"] == 3.5
    _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 300}, "fast": {"estimated_epoch_s": 240}})
    p = pick.pick_recipe(1, {}, data, time.perf_counter())  # 50 s: not a quarter of either
    assert p["recipe"] == "fast" and "quickest" in p["why"] and not any(r["fits"] for r in p["rows"])
    # none fits, and the two are as quick within a probe's noise (5%): the one expected to do better after its
    # quarter (fast: 0.1 + 0.65 / 4; seed-aug: 0.1 + 0.7 / 16); 10% slower is not as quick
    for fast_epoch_s, picked, why in ((252, "fast", "within 5% of the quickest"), (264, "seed-aug", "is the quickest")):
        _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 240}, "fast": {"estimated_epoch_s": fast_epoch_s}})
        p = pick.pick_recipe(1, {}, data, time.perf_counter())
        assert p["recipe"] == picked and why in p["why"] and not any(r["fits"] for r in p["rows"])
    assert [r[pick.EXPECTED] for r in p["rows"]] == [pytest.approx(0.1 + 0.7 / 16, abs=1e-4),
                                                                    pytest.approx(0.1 + 0.65 / 4, abs=1e-4)]
    _plans(monkeypatch, {"seed-aug": UserError("cannot take 64×64"), "fast": UserError("cannot take 64×64")})
    with pytest.raises(UserError, match="no recipe with a measured frontier"):
        pick.pick_recipe(1, {}, data, time.perf_counter())
    lines = pick.pick_lines({**p, "rows": [{"recipe": "fast", "excluded": "cannot take 64×64"}, *p["rows"]]})
    assert any("cannot train this data set" in line for line in lines) and lines[-1].startswith("→ seed-aug")
    _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 25}, "fast": {"estimated_epoch_s": 100}})
    lines = pick.pick_lines(pick.pick_recipe(2, {}, data, time.perf_counter()))  # seed-aug fits 4.25, fast 1
    assert " 4.25 epochs fit  " in lines[1] and "    1 epoch fits  " in lines[2]
    _plans(monkeypatch, {"seed-aug": {"estimated_epoch_s": 300}, "fast": {"estimated_epoch_s": 100}})
    assert "after 1 epoch at 100 img/s" in pick.pick_lines(pick.pick_recipe(2, {}, data, time.perf_counter()))[-1]


def test_a_recipe_never_quicker_than_another_is_probed_only_when_it_could_win(monkeypatch, data):
    """fast95 (the fast model, wider) fits at most fast's epochs: when its curve there is no better than the best
    expectation so far it is not probed (a probe of it is ~10 s on a 2-core CPU); when it could win, it is."""
    import time

    calls = []

    def fake_probe(cfg, data, stats):
        calls.append(cfg.recipe)
        return {"train_images_per_s": 100.0, "final_eval_s": 10.0, "validation_s": 0.0, "steps_per_epoch": 40,
                "measured_by": "test", "estimated_epoch_s": {"fast": 30, "fast95": 90}[cfg.recipe]}

    monkeypatch.setattr(pick, "probe", fake_probe)
    curves = {"fast95": [{"epochs": 12, "test_accuracy_tta": 0.95}],  # first in the file: probed last all the same
              "fast": [{"epochs": 1, "test_accuracy_tta": 0.75}, {"epochs": 10, "test_accuracy_tta": 0.94}]}
    monkeypatch.setattr(pick, "read_frontier", lambda: curves)
    # 3 minutes: fast fits 5.5 epochs of 30 s (0.75 + 0.19 × 4.5 / 9 = 84.5%); fast95's curve at 5.5 epochs is
    # 0.1 + 0.85 × 5.5 / 12 = 49.0%: it cannot win, and is not probed
    p = pick.pick_recipe(3, {}, data, time.perf_counter())
    assert calls == ["fast"] and p["recipe"] == "fast" and [r["recipe"] for r in p["rows"]] == ["fast95", "fast"]
    assert p["rows"][0]["skipped"] == ("no quicker than fast, which fits 5.5 epochs: at most 49.0% expected after "
                                       "them, not above fast's 84.5%")
    lines = pick.pick_lines(p)
    assert "fast95     not probed: no quicker than fast" in lines[1] and lines[-1].startswith("→ fast:")
    # 20 minutes: fast fits 39.5 epochs (94.0%, flat past 10), and fast95 could reach 95.0%: probed, and it fits
    # 13 epochs of 90 s, past its last measured point
    calls.clear()
    p = pick.pick_recipe(20, {}, data, time.perf_counter())
    assert calls == ["fast", "fast95"] and p["recipe"] == "fast95" and p["rows"][0]["epochs"] == 13
    assert p["rows"][1]["epochs"] == 39.5 and "skipped" not in p["rows"][0]
    # 10 s, all of it the test pass: fast fits no quarter of an epoch, so fast95 cannot either
    calls.clear()
    p = pick.pick_recipe(1 / 6, {}, data, time.perf_counter())
    assert calls == ["fast"] and "fits no quarter of an epoch" in p["rows"][0]["skipped"] and p["recipe"] == "fast"


@pytest.mark.parametrize("slower, quicker", sorted(pick.NEVER_QUICKER_THAN.items()))
def test_a_recipe_never_quicker_than_another_is_the_same_model_with_more_flops(slower, quicker):
    """What NEVER_QUICKER_THAN assumes: the same model at the same batch size, split and test views (the same steps
    per epoch and test passes), with more FLOPs per image in training and in evaluation."""
    a, b = RunConfig.resolve(slower), RunConfig.resolve(quicker)
    assert a.model == b.model and (a.batch_size, a.val_size, a.tta, a.tta_translate) == (
        b.batch_size, b.val_size, b.tta, b.tta_translate)
    rt = resolve_runtime("cpu", "fp32", True, None)
    fa, fb = (model_flops(build_classifier(c.model, [0.5] * 3, [0.25] * 3, 10, **c.model_options), rt) for c in (a, b))
    assert fa["train"] > fb["train"] and fa["eval"] > fb["eval"]
    assert quicker in pick.read_frontier() and quicker not in pick.NEVER_QUICKER_THAN  # always probed


def test_time_budget_without_recipe_picks_measures_and_records_why(fake_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"  # the small fake data set: the picked recipe's test pass is over 1,000 images
    stats_of = []  # the candidates share one split: its channel statistics are computed once, not per candidate
    monkeypatch.setattr(pick, "channel_stats", lambda x: stats_of.append(len(x)) or channel_stats(x))
    assert cli("train", "--data-dir", fake_dir, "--time-budget", "0.5", "--subset", "300", "--val-size", "200",
               "--out", out) == 0
    text = capsys.readouterr().out
    picked = json.loads((out / "recipe_pick.json").read_text())
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["recipe"] == picked["recipe"] and f"→ {picked['recipe']}" in text and "without --recipe" in text
    assert {r["recipe"] for r in picked["rows"]} == set(pick.read_frontier())
    probed = [r for r in picked["rows"] if "skipped" not in r]
    assert all(r["train_images_per_s"] > 0 for r in probed) and stats_of == [300]
    assert 0 < sum(r["probe_seconds"] for r in probed) <= picked["seconds"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["budget"]["wall_seconds"] >= picked["seconds"]  # the choice counted against the budget
    # the run planned from the picker's probe of its recipe: it did not measure it again
    assert m["budget"]["speed_measured_by"] == "the recipe picker's probe" == picked["speed"]["measured_by"]
    assert m["budget"]["train_images_per_s"] == round(picked["speed"]["train_images_per_s"], 1)
    assert picked["seconds"] <= m["budget"]["calibration_s"] < picked["seconds"] + 10
    assert "measured by the recipe picker's probe" in text
    # an explicit recipe wins: nothing is picked. The picked run's folder is a run folder: --overwrite replaces it
    # (recipe_pick.json is one of its files), and the old choice does not stay beside the new run
    assert cli("train", "--data-dir", fake_dir, "--time-budget", "0.2", "--recipe", "seed", "--subset", "200",
               "--val-size", "100", "--out", out, "--overwrite") == 0
    assert not (out / "recipe_pick.json").exists()
    assert json.loads((out / "config.json").read_text())["config"]["recipe"] == "seed"
    assert "without --recipe" not in capsys.readouterr().out
