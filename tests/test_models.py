import math

import pytest
import torch
from torch import nn

from cifar10cnn.errors import UserError
from cifar10cnn.models import build_classifier, create_model, list_models, trainable_params


def test_seed_has_the_keras_parameter_count():
    assert trainable_params(create_model("seed")) == 1_454_730


def test_seed_layer_order_matches_the_keras_model():
    net = create_model("seed")
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d"] * 3
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    for bn in (m for m in net.features if isinstance(m, nn.BatchNorm2d)):
        assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)  # Keras momentum 0.99
    head = [type(m).__name__ for m in net.classifier]
    assert head == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    dense = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(4096, 256), (256, 128), (128, 10)]
    assert [m.p for m in net.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_seed_uses_glorot_uniform_kernels_and_zero_biases():
    torch.manual_seed(0)
    net = create_model("seed")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            fan_in = w[0].numel()
            fan_out = w.shape[0] * (w[0][0].numel() if w.dim() == 4 else 1)
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert w.abs().max() <= bound
            assert w.abs().max() > 0.9 * bound  # uniform over the whole range, not a narrower init
            assert torch.count_nonzero(m.bias) == 0


def test_flatten_follows_keras_channels_last_order():
    net = create_model("seed").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = net.features(x)  # N×256×4×4
        keras_order = feats.permute(0, 2, 3, 1).reshape(2, -1)  # (H, W, C) like Keras' Flatten on NHWC
        torch.testing.assert_close(net(x), net.classifier(keras_order))
        assert not torch.allclose(net(x), net.classifier(feats.reshape(2, -1)))


def test_seed_variants_are_options_not_copies():
    assert trainable_params(create_model("seed", batchnorm=False)) == 1_454_730 - 2 * (64 + 128 + 256)
    assert trainable_params(create_model("seed", filters=(64, 64, 64))) < 1_454_730
    assert create_model("seed", dropout=0.25).classifier[2].p == 0.25


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown model 'nope'; valid models: .*seed"):
        create_model("nope")
    assert "seed" in list_models()


def test_bad_model_option_is_a_user_error():
    with pytest.raises(UserError, match="bad options"):
        create_model("seed", wings=2)


def test_classifier_takes_uint8_and_normalises_inside():
    torch.manual_seed(0)
    clf = build_classifier("seed", [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = clf.net((x.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(clf(x), expected)
    # the same output in channels_last memory format
    torch.testing.assert_close(clf(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5, rtol=1e-5)


REFERENCE_PARAMS = {  # ../shared/REFERENCES.md
    "seed": 1_454_730, "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet18": 11_173_962, "mobilenetv2": 2_296_922,
    # kuangliu's PreActResNet18 (11,171,146) + the final BN of the pre-activation paper (2 × 512)
    "preact_resnet18": 11_171_146 + 1_024,
    # d-li14/efficientnet-lite.pytorch's ImageNet counts (4.652 / 5.417 / 6.092 M) with a 10-class head
    # instead of 1000 classes (1280 × 990 + 990 fewer): see tests/test_transfer.py for the exact 1000-class counts
    "efficientnet_lite0": 4_652_008 - 990 * 1281, "efficientnet_lite1": 5_416_680 - 990 * 1281,
    "efficientnet_lite2": 6_092_072 - 990 * 1281,
    # airbench94's layers by hand (its whitening weights do not train): whitening bias 24, convs 24·64·9 +
    # 64·64·9 + 64·256·9 + 3 × 256·256·9, BatchNorm biases 2 × (64 + 256 + 256), head 256·10
    "fast": 24 + 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 3 * 256 * 256 * 9 + 2 * (64 + 256 + 256) + 256 * 10,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_reference_parameter_counts(name):
    assert trainable_params(create_model(name)) == REFERENCE_PARAMS[name]


def test_every_registered_model_has_a_reference_count():
    assert sorted(list_models()) == sorted(REFERENCE_PARAMS)


def test_forward_flops_match_hand_counts():
    from cifar10cnn.models import forward_flops

    macs = 32 * 32 * 64 * 27 + 16 * 16 * 128 * 576 + 8 * 8 * 256 * 1152 + 4096 * 256 + 256 * 128 + 128 * 10
    assert forward_flops(create_model("seed")) == 2 * macs  # ≈ 81 MFLOPs; a training step ≈ 3× (243 MFLOP)


def test_resnet20_option_a_shortcut_has_no_parameters():
    from cifar10cnn.models.resnet import ShortcutA

    net = create_model("resnet20")
    shortcuts = [m for m in net.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2 and all(not list(s.parameters()) for s in shortcuts)
    x = torch.randn(2, 16, 32, 32)
    y = shortcuts[0](x)
    assert y.shape == (2, 32, 16, 16) and torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and y[:, :8].abs().sum() == 0


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_each_model_learns_a_fixed_batch(name):
    """A few steps on one batch lower its loss: gradients flow through every architecture."""
    torch.manual_seed(0)
    model = build_classifier(name, [0.5] * 3, [0.25] * 3).to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
