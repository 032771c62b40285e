"""The `fast` model and recipe: whitening stem, dirac init, optimizer groups, Lookahead, multi-crop TTA,
every switch of the recipe, resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import UserError
from cifar10cnn.inference import predict_logits, shifted_views
from cifar10cnn.models import Normalize, create_model, trainable_params
from cifar10cnn.models.fast import WHITEN_EPS, patch_covariance, patch_rows, whitening_weights
from cifar10cnn.recipes import FAST_SWITCHES
from cifar10cnn.runtime import resolve_runtime
from cifar10cnn.training.ema import Lookahead
from cifar10cnn.training.engine import train
from cifar10cnn.training.parts import freeze_finished_groups, make_optimizer, schedule_lr

from .conftest import StopAfter, cli

TINY = {"subset": 300, "val_size": 100, "batch_size": 100, "epochs": 2, "lookahead_from_epoch": 2,
        "whiten_bias_epochs": 1, "eval_batch_size": 100}


def correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, colour-correlated images (like photos: neighbouring pixels and channels move together)."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=32, mode="bilinear", align_corners=False)
    colour = torch.randn(n, 3, 1, 1, generator=g) * 0.3
    return base + colour + 0.05 * torch.randn(n, 3, 32, 32, generator=g)


def test_the_whitening_stem_whitens_the_patches():
    x = correlated_images()
    cov = patch_covariance(x)
    assert torch.allclose(cov, (lambda r: r.T @ r / len(r))(patch_rows(x).double()), atol=1e-9)  # chunks add up
    net = create_model("fast")
    net.init_from_data(x)
    w = net.whiten.weight.detach().double().view(24, 12)
    assert torch.equal(net.whiten.weight[:12], -net.whiten.weight[12:])  # ± pairs
    out_cov = w[:12] @ cov @ w[:12].T  # covariance of the first 12 output channels
    eig = torch.linalg.eigvalsh(cov).flip(0)
    assert torch.allclose(out_cov, torch.diag(eig / (eig + WHITEN_EPS)), atol=1e-5)  # decorrelated
    assert (out_cov.diagonal()[eig > 100 * WHITEN_EPS] > 0.99).all()  # unit variance where the data varies
    assert cov.diagonal().max() / cov.diagonal().min() < 5 and torch.linalg.cond(cov) > 100  # it had work to do
    # through the layer itself (no bias), on the same images
    y = F.conv2d(x, net.whiten.weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    assert torch.allclose(y.T @ y / len(y), out_cov, atol=1e-4)
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
    assert whitening_weights(x).shape == (24, 3, 2, 2)


def test_fast_model_shape_options_and_identity_init():
    net = create_model("fast")
    assert trainable_params(net) == 1_971_352 and net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    conv = net.groups[1].conv1  # 64 → 256: the first 64 output channels copy the input channels
    assert torch.equal(conv.weight[:64, :, 1, 1], torch.eye(64)) and conv.weight[:64].abs().sum() == 64
    assert not torch.equal(create_model("fast", dirac=False).groups[1].conv1.weight[:64, :, 1, 1], torch.eye(64))
    assert not net.groups[0].norm1.weight.requires_grad and net.groups[0].norm1.momentum == 0.4
    assert create_model("fast", bn_weight=True).groups[0].norm1.weight.requires_grad
    assert trainable_params(create_model("fast", whiten=False)) == 1_971_352 + 288  # the stem trains instead
    assert isinstance(create_model("fast", act="relu").act, torch.nn.ReLU)
    with pytest.raises(UserError, match="bad options for model 'fast'"):
        create_model("fast", width_multiplier=2)  # not an option of this model


def test_optimizer_groups_scale_bn_lr_keep_decay_per_step_and_freeze_the_whitening_bias():
    cfg = RunConfig.resolve("fast")
    model = create_model("fast")
    opt = make_optimizer(cfg, model, resolve_runtime("cpu", "fp32"))
    by_scale = {g["lr_scale"]: g for g in opt.param_groups if "until_epoch" not in g}
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in by_scale[64.0]["params"]} == bn_biases
    assert by_scale[64.0]["lr"] * by_scale[64.0]["weight_decay"] == pytest.approx(cfg.lr * cfg.weight_decay)
    assert by_scale[1.0]["weight_decay"] == pytest.approx(0.0153 / 11.5) and by_scale[1.0]["lr"] == 1.5
    (stem,) = [g for g in opt.param_groups if "until_epoch" in g]
    assert stem["params"] == [model.whiten.bias] and stem["until_epoch"] == 3
    freeze_finished_groups(opt, 3)
    assert stem["lr"] > 0
    freeze_finished_groups(opt, 4)
    assert stem["lr"] == 0 and stem["lr_scale"] == 0 and by_scale[1.0]["lr"] > 0
    # the history's lr column: the schedule's value, not the first group's (the frozen stem bias, or BN ×64)
    for group in opt.param_groups:
        group["lr"] = 0.3 * group["lr_scale"]
    assert opt.param_groups[0] is stem and schedule_lr(opt) == pytest.approx(0.3)
    # a model without a whitening stem cannot ask for it
    with pytest.raises(UserError, match="whiten_bias_epochs is for models with a whitening stem"):
        train(RunConfig.resolve("seed", {**TINY, "epochs": 1}), data=_FakeData())


class _FakeData:
    """Just enough of a data set for the checks that happen before training."""
    train_x = torch.zeros(600, 32, 32, 3, dtype=torch.uint8)
    train_y = torch.arange(600) % 10
    classes = [str(i) for i in range(10)]
    val_idx = None  # no validation set of its own (ImageDataset.val_idx)


def test_lookahead_starts_from_the_weights_then_pulls_them_back():
    model = torch.nn.Linear(2, 1, bias=False)
    la = Lookahead(model, every=5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.step(model, 3, 0.03)  # not a multiple of 5: nothing happens
    assert not la.started
    la.step(model, 5, 0.05)  # first: the average starts at the weights
    assert la.started and torch.equal(la.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    la.step(model, 100, 1.0)  # at the end ρ = 0.95⁵: avg = ρ·1 + (1 − ρ)·3, and the weights jump to it
    rho = 0.95 ** 5
    assert torch.allclose(model.weight, torch.full((1, 2), rho + (1 - rho) * 3))
    assert torch.equal(la.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la.pull(model, 1.0)  # decay 1: back to the average
    assert torch.allclose(model.weight, torch.full((1, 2), rho + (1 - rho) * 3))


def test_multi_crop_tta_is_the_weighted_mean_of_six_views():
    rt = resolve_runtime("cpu", "fp32")
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    x = images.permute(0, 3, 1, 2).float()
    down_right, up_left = shifted_views(x, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # reflected edge
    net = torch.nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                              torch.nn.LazyLinear(10)).eval()  # takes uint8 images, like every classifier
    with torch.no_grad():
        net(x)

        def mirrored(v):
            return (net(v) + net(v.flip(3))) / 2

        expected = mirrored(x) / 2 + (mirrored(down_right) + mirrored(up_left)) / 4
    got = predict_logits(net, images, rt, batch_size=2, tta=True, translate=1)
    assert got.shape == (5, 10) and torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(predict_logits(net, images, rt, tta=True), mirrored(x), atol=1e-4)


@pytest.mark.parametrize("switch", list(FAST_SWITCHES))
def test_every_switch_of_the_fast_recipe_trains(switch, data, tmp_path):
    cfg = RunConfig.resolve("fast", {**TINY, **FAST_SWITCHES[switch]})
    out, metrics = train(cfg, tmp_path / "run", data=data, test=False)
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and metrics["best_val_accuracy"] is not None


def test_fast_recipe_end_to_end_with_multi_crop_tta_and_resume(fake_dir, tmp_path, capsys):
    base = ["--recipe", "fast", "--data-dir", str(fake_dir), "--subset", "400", "--val-size", "200",
            "--batch-size", "100", "--epochs", "3", "--set", "lookahead_from_epoch=2", "--set", "whiten_bias_epochs=1"]
    full = tmp_path / "full"
    assert cli("train", *base, "--out", full) == 0
    assert "multi-crop TTA" in capsys.readouterr().out
    m = json.loads((full / "metrics.json").read_text())
    assert m["tta"]["views"] == 6 and m["tta"]["translate"] == 1 and m["test_accuracy_tta"] is not None
    assert m["metrics_schema"] == 2 and m["test_images"] == sum(map(sum, m["confusion_matrix"]))
    ck = load_file(str(full / "checkpoint" / "last.safetensors"))
    assert any(k.startswith("lookahead.") for k in ck)  # the average is saved for resume
    assert len((full / "history.csv").read_text().splitlines()) == 1 + 3
    assert cli("evaluate", full, "--data-dir", str(fake_dir), "--tta", "--tta-translate", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy_tta"] == m["test_accuracy_tta"]  # the same 6 views
    after = json.loads((full / "metrics.json").read_text())
    assert after["test_accuracy"] == m["test_accuracy"] and after["tta"]["views"] == 6  # nothing else replaced
    assert cli("evaluate", full, "--data-dir", str(fake_dir), "--json") == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == m["test_accuracy"]  # single view, as train
    assert json.loads((full / "metrics.json").read_text())["test_accuracy_tta"] == m["test_accuracy_tta"]
    # the report shows the figure train printed, labelled, beside its own single-view figure
    assert cli("report", full, "--data-dir", str(fake_dir)) == 0
    page = (full / "report.html").read_text()
    assert f"test accuracy with multi-crop TTA (6 views)<b>{m['test_accuracy_tta']:.2%}</b>" in page
    assert f"test accuracy (single view)<b>{m['test_accuracy']:.2%}</b>" in page
    assert cli("evaluate", full, "--data-dir", str(fake_dir), "--tta-translate", "1") == 2
    assert "add --tta" in capsys.readouterr().err

    # stopped after epoch 2 (Lookahead running, whitening bias frozen), resumed: the same weights
    from cifar10cnn.data.cifar import load_cifar10

    data = load_cifar10(fake_dir)
    cfg = RunConfig.resolve("fast", {"subset": 400, "val_size": 200, "batch_size": 100, "epochs": 3,
                                     "lookahead_from_epoch": 2, "whiten_bias_epochs": 1})

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data, hooks=[StopAfter(2)])
    train(cfg, tmp_path / "cut", data=data, resume=True)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
