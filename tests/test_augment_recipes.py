"""Batched augmentation, named recipes and config round trips, schedules, time budget, --final, EMA."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from cifar10cnn.config import RunConfig, parse_settings
from cifar10cnn.data.augment import Augment, crop_flip, cutout, flip, random_crop
from cifar10cnn.errors import UserError
from cifar10cnn.recipes import RECIPES
from cifar10cnn.training.schedule import lr_factor

from .conftest import QUICK, cli


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)


def test_crop_is_a_window_of_the_padded_image():
    x = _batch()
    out = random_crop(x, 4, "reflect", torch.Generator().manual_seed(1))
    padded = F.pad(x.float(), (4,) * 4, mode="reflect").to(torch.uint8)
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32], out[i])]
        assert windows, f"image {i} is not a crop of its padded self"
    assert out.is_contiguous(memory_format=torch.channels_last)  # layout kept for the network


@settings(max_examples=40, deadline=None)
@given(padding=st.integers(0, 6), mode=st.sampled_from(["reflect", "zero"]),
       flip_mode=st.sampled_from(["none", "random", "alternating"]), epoch=st.integers(0, 3),
       seed=st.integers(0, 2**16), channels_last=st.booleans(), size=st.sampled_from([8, 32]))
def test_fused_crop_flip_equals_crop_then_flip(padding, mode, flip_mode, epoch, seed, channels_last, size):
    """Training uses the one-gather crop_flip; it must give exactly the images of the readable definitions."""
    x = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    idx = torch.arange(100, 106)
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected = flip(random_crop(x, padding, mode, g1), flip_mode, g1, idx, epoch, 7)
    got = crop_flip(x, padding, mode, flip_mode, g2, idx, epoch, 7)
    assert torch.equal(got, expected)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last or padding == 0


def test_zero_padding_fills_with_zeros():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    out = random_crop(x, 4, "zero", torch.Generator().manual_seed(0))
    values = set(out.unique().tolist())
    assert values == {0, 200}


def test_augmentation_is_deterministic_under_a_seed_and_keeps_image_identity():
    colours = torch.arange(16, dtype=torch.uint8) * 10 + 5  # one flat colour per image = its "label"
    x = colours[:, None, None, None].expand(16, 3, 32, 32).contiguous()
    aug = Augment(crop_padding=4, pad_mode="reflect", flip="random", cutout=8)
    a = aug(x, torch.arange(16), 0, torch.Generator().manual_seed(3))
    b = aug(x, torch.arange(16), 0, torch.Generator().manual_seed(3))
    c = aug(x, torch.arange(16), 0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for i in range(16):  # each output still holds only its own image's colour (and cutout zeros)
        assert set(a[i].unique().tolist()) <= {0, int(colours[i])}


def test_random_flip_mirrors_about_half():
    x = _batch(2000)
    out = flip(x, "random", torch.Generator().manual_seed(0))
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert 900 < int(mirrored.sum()) < 1100


def test_alternating_flip_swaps_halves_between_epochs():
    x, idx = _batch(1000), torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    even = (flip(x, "alternating", g, idx, epoch=0) == x.flip(3)).flatten(1).all(1)
    odd = (flip(x, "alternating", g, idx, epoch=1) == x.flip(3)).flatten(1).all(1)
    again = (flip(x, "alternating", g, idx, epoch=2) == x.flip(3)).flatten(1).all(1)
    assert torch.equal(even, ~odd) and torch.equal(even, again) and 400 < int(even.sum()) < 600


def test_cutout_zeroes_one_square():
    x = torch.full((200, 3, 32, 32), 7, dtype=torch.uint8)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # a full 8×8 square, clipped at the border


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), pad=st.integers(0, 6), mode=st.sampled_from(["reflect", "zero"]),
       flip_mode=st.sampled_from(["none", "random", "alternating"]), size=st.integers(0, 12))
def test_augment_properties(n, pad, mode, flip_mode, size):
    x = _batch(n)
    out = Augment(pad, mode, flip_mode, size)(x, torch.arange(n), 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(n):
        assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0}


def test_bad_augment_settings():
    with pytest.raises(UserError, match="valid: none, random, alternating"):
        Augment(flip="sideways")


# --- recipes and config ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_resolves(name):
    cfg = RunConfig.resolve(name)
    assert cfg.recipe == name and cfg.model == RECIPES[name]["model"]


def test_seed_recipe_is_the_keras_recipe():
    cfg = RunConfig.resolve("seed")
    assert (cfg.optimizer, cfg.lr, cfg.adam_eps, cfg.batch_size, cfg.epochs, cfg.patience, cfg.monitor) == (
        "adam", 1e-3, 1e-7, 32, 50, 5, "val_loss")
    assert (cfg.schedule, cfg.crop_padding, cfg.flip, cfg.label_smoothing, cfg.weight_decay) == (
        "constant", 0, "none", 0.0, 0.0)


def test_flags_and_set_override_recipe_fields():
    cfg = RunConfig.resolve("resnet", {"model": "resnet56", **parse_settings(["label_smoothing=0.2", "flip=none"])})
    assert cfg.model == "resnet56" and cfg.label_smoothing == 0.2 and cfg.flip == "none" and cfg.lr == 0.1


@pytest.mark.parametrize("pairs, message", [(["lable_smoothing=0.1"], "unknown config field 'lable_smoothing'"),
                                            (["flip"], "expects FIELD=VALUE"),
                                            (["flip=sideways"], "invalid flip 'sideways'"),
                                            (["epochs=ten"], "epochs must be int"),
                                            (["label_smoothing=1.5"], "label_smoothing must be in"),
                                            (["tta=3"], "must be true or false")])
def test_bad_fields_give_one_line_errors(pairs, message, tmp_path, capsys):
    args = [a for p in pairs for a in ("--set", p)]
    assert cli("train", *QUICK, "--out", tmp_path / "r", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_lr_schedules():
    assert [lr_factor("constant", s, 100, 0) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_factor("onecycle", 9, 100, 10) == 1.0 and lr_factor("onecycle", 4, 100, 10) == 0.5
    assert lr_factor("onecycle", 100, 100, 10) == 0.0
    assert lr_factor("onecycle", 55, 100, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 55, 100, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 100, 10) == pytest.approx(1.0)


def test_config_round_trip_reruns_a_run_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("train", "--recipe", "seed-aug", *QUICK, "--epochs", "2", "--set", "ema_decay=0.9", "--out", a) == 0
    assert cli("train", "--config", a / "config.json", "--out", b) == 0
    ca, cb = (json.loads((p / "config.json").read_text())["config"] for p in (a, b))
    assert ca == cb and ca["recipe"] == "seed-aug" and ca["flip"] == "random"
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma = json.loads((a / "metrics.json").read_text())
    assert ma["test_accuracy_tta"] is not None and ma["tta"]["views"] == 2  # the recipe evaluates with flip TTA
    ck = load_file(str(a / "checkpoint" / "last.safetensors"))
    assert any(k.startswith("ema.") for k in ck)  # the weight average is saved and resumable
    # the saved best weights are the EMA's, not the raw model's
    raw = {k[6:]: v for k, v in ck.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in ck.items() if k.startswith("ema.")}
    assert torch.equal(wa["net.classifier.6.weight"], ema["net.classifier.6.weight"])
    assert not torch.equal(wa["net.classifier.6.weight"], raw["net.classifier.6.weight"])


def test_config_and_recipe_together_are_refused(tmp_path, quick_run, capsys):
    assert cli("train", "--config", quick_run / "config.json", "--recipe", "seed", "--out", tmp_path / "x") == 2
    assert "drop --recipe" in capsys.readouterr().err


def test_final_trains_without_a_validation_split(tmp_path):
    out = tmp_path / "final"
    assert cli("train", "--subset", "300", "--batch-size", "50", "--epochs", "2", "--final", "--out", out) == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["final"] is True and doc["data"]["val_images"] == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["best_epoch"] == 2 and m["best_val_accuracy"] is None and m["epochs"] == 2
    assert "val_loss,val_accuracy" in (out / "history.csv").read_text().splitlines()[0]
    assert cli("report", out) == 0  # the report of a run without validation columns
    page = (out / "report.html").read_text()
    assert '<section id="curves">' in page and "no validation split" in page


def test_time_budget_plans_epochs_and_keeps_to_the_budget(tmp_path, capsys):
    out = tmp_path / "budget"
    budget_min = 0.5
    assert cli("train", "--subset", "2000", "--val-size", "500", "--batch-size", "100", "--time-budget",
               str(budget_min), "--set", "schedule=onecycle", "--out", out) == 0
    m = json.loads((out / "metrics.json").read_text())
    b = m["budget"]
    last_plan = b["replanned"][-1]["epochs"] if b.get("replanned") else b["planned_epochs"]
    assert b["planned_epochs"] > 0 and b["epochs_run"] <= last_plan
    assert b["train_images_per_s"] > 0 and b["minutes"] == budget_min
    if b["planned_seconds"] <= budget_min * 60:  # planned to fit: it fits (generous margin for a loaded machine)
        assert m["wall_seconds"] <= budget_min * 60 * 1.5
    else:  # a slow CPU cannot fit a quarter of an epoch and the test pass in 30 s: it says so, trains a quarter
        assert b["planned_epochs"] < 1 and "not even a quarter of an epoch fits" in capsys.readouterr().out
        assert m["wall_seconds"] <= b["planned_seconds"] * 1.5
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert len(rows) == math.ceil(b["epochs_run"]) == m["epochs"]  # the last epoch may end part of the way
    assert float(rows[-1].split(",")[5]) < float(rows[0].split(",")[5]) or len(rows) == 1  # lr decays to the end
