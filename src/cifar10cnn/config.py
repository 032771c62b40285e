"""The run config: every setting of a training run, resolved, in one dataclass.

    recipe defaults  →  overridden by flags  →  validated  →  saved as config.json in the run folder

`config.json` also records what the run resolved at start (device, precision, threads, versions,
normalisation statistics), under "runtime" and "data", so a run folder describes itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .data.dataset import canonical_name, check_image_size
from .errors import UserError
from .fileio import read_json
from .recipes import get_recipe


@dataclass
class RunConfig:
    recipe: str = "seed"
    dataset: str = "cifar10"  # cifar10 | cifar100 | cifar100:coarse | folder:PATH (data/dataset.py)
    image_size: int = 32  # pixels per side the images are decoded to (a folder's; CIFAR's are 32)
    model: str = "seed"
    model_options: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    adam_eps: float = 1e-7
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 50  # at most; early stopping may end sooner
    patience: int = 5  # epochs without improvement of `monitor` before stopping; 0 = never stop early
    monitor: str = "val_loss"  # val_loss (Keras default) or val_accuracy
    seed: int = 0  # weights, shuffling, dropout
    split_seed: int = 0  # the stratified train/validation split
    val_size: int | None = None  # validation images; None: the data set's own (a folder's val/), else a tenth of
    #                               the training images, stratified (5,000 of CIFAR's 50,000)
    subset: int | None = None  # a stratified slice of the training split, for quick runs
    eval_batch_size: int = 500
    train_eval_images: int = 0  # > 0: also evaluate this many training images in eval mode each epoch (the
    #                              honest train accuracy for the train-validation gap: no dropout, BN in eval)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp16 | fp32
    channels_last: bool = True
    threads: int | None = None  # CPU threads; default: all cores
    compile: bool = False  # torch.compile the training step's model (the compile time is part of the run)
    tensorboard: bool = False  # live scalars in RUN/tensorboard (needs the tensorboard extra)
    # optimisation beyond the seed recipe (the defaults leave the seed recipe unchanged)
    momentum: float = 0.9  # sgd (and muon's SGD part) only (Nesterov)
    muon_lr: float = 0.24  # optimizer muon: the step size of the conv filters (the rest uses lr; training/muon.py)
    muon_momentum: float = 0.6  # optimizer muon: the filters' Nesterov momentum
    decay_bn_bias: bool = True  # False: no weight decay on BatchNorm weights and biases (1-D parameters)
    schedule: str = "constant"  # constant | onecycle (linear up, linear down to lr_end_factor) | cosine
    warmup_epochs: float = 0.0  # linear warm-up from lr_start_factor × lr, in epochs
    warmup_fraction: float = 0.0  # > 0: the warm-up as a fraction of the run's steps instead (keeps the
    #                               schedule's shape when a time budget changes the epochs)
    lr_start_factor: float = 0.0  # the warm-up starts at this fraction of lr
    lr_end_factor: float = 0.0  # onecycle and cosine end at this fraction of lr
    norm_lr_scale: float = 1.0  # lr multiplier for BatchNorm biases and weights; their weight decay per step
    #                             stays that of the other weights (the group's coefficient is divided by it)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # > 0: evaluate and save an exponential moving average of the weights
    lookahead_every: int = 0  # > 0: every this many steps, pull the weights towards their running average
    #                           and continue from there (Lookahead; the average's decay grows as 0.95^k·t³)
    lookahead_from_epoch: int = 4  # the first epoch (1-based) of the Lookahead
    whiten_bias_epochs: int = 0  # > 0: models with a data-whitening stem train its bias this many epochs only
    # augmentation of training batches (data/augment.py)
    crop_padding: int = 0  # random crop after padding by this many pixels
    pad_mode: str = "reflect"  # reflect | zero
    flip: str = "none"  # none | random | alternating
    cutout: int = 0  # side of the zeroed square, 0 = off
    tta: bool = False  # flip test-time augmentation for the final test evaluation
    tta_translate: int = 0  # > 0 (with tta): also the image shifted by ± this many pixels (6 views in all)
    # transfer learning (models with pretrained weights, e.g. model_options {"pretrained": true})
    linear_probe: bool = False  # train only the head, on cached features of the frozen backbone
    backbone_lr_scale: float = 1.0  # learning rate of everything but the head, relative to lr
    init_from: str | None = None  # a run folder whose weights start this run (e.g. a linear probe's head)
    # budget and final training
    time_budget: float | None = None  # minutes for the whole run; sets epochs from measured speed
    final: bool = False  # train on all 50,000 training images with fixed settings (no validation split)

    def validate(self, check_paths: bool = True) -> RunConfig:
        """Refuse any setting out of range (one line naming it); check_paths=False for a finished run's
        config, whose init_from folder may since have gone."""
        from .models import list_models

        if self.model not in list_models():
            raise UserError(f"unknown model {self.model!r}; valid models: {', '.join(list_models())}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and self.lr == self.lr and self.lr != float("inf")):
            raise UserError(f"--lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise UserError(f"--patience must be an integer >= 0, got {self.patience!r}")
        choices = {"optimizer": ("adam", "adamw", "sgd", "muon"), "monitor": ("val_loss", "val_accuracy"),
                   "precision": ("auto", "bf16", "fp16", "fp32")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise UserError(f"invalid {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"--threads must be a positive integer, got {self.threads}")
        choices = {"schedule": ("constant", "onecycle", "cosine"), "pad_mode": ("reflect", "zero"),
                   "flip": ("none", "random", "alternating")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise UserError(f"invalid {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        ranges = {"label_smoothing": (0.0, 1.0), "ema_decay": (0.0, 1.0), "momentum": (0.0, 1.0),
                  "muon_momentum": (0.0, 1.0), "warmup_fraction": (0.0, 1.0), "lr_start_factor": (0.0, 1.0),
                  "lr_end_factor": (0.0, 1.0)}
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) < hi:
                raise UserError(f"{name} must be in [{lo}, {hi}), got {getattr(self, name)}")
        non_negative = ["warmup_epochs", "crop_padding", "cutout", "train_eval_images", "lookahead_every",
                        "whiten_bias_epochs", "tta_translate"]
        bad = [name for name in non_negative if getattr(self, name) < 0]
        if bad:
            raise UserError(f"{', '.join(bad)} must be >= 0")
        if not self.muon_lr > 0:
            raise UserError(f"muon_lr must be > 0, got {self.muon_lr}")
        if not self.norm_lr_scale > 0 or self.lookahead_from_epoch < 1:
            raise UserError("norm_lr_scale must be > 0 and lookahead_from_epoch >= 1")
        if self.tta_translate and not self.tta:
            raise UserError("tta_translate adds shifted views to the flip TTA: set tta too")
        if self.time_budget is not None and not self.time_budget > 0:
            raise UserError(f"--time-budget must be a positive number of minutes, got {self.time_budget}")
        if not self.backbone_lr_scale > 0:
            raise UserError(f"backbone_lr_scale must be > 0, got {self.backbone_lr_scale}")
        if check_paths and self.init_from is not None and not (
                isinstance(self.init_from, str) and (Path(self.init_from) / "model.safetensors").is_file()):
            raise UserError(f"init_from {self.init_from!r} is not a run folder with a model.safetensors")
        if self.linear_probe and (self.ema_decay or self.crop_padding or self.cutout or self.flip != "none"):
            raise UserError("linear_probe trains on features computed once, so it cannot use per-epoch "
                            "augmentation (crop_padding, flip, cutout) or ema_decay; turn those off")
        self.dataset = canonical_name(self.dataset)
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or not 8 <= self.image_size <= 512:
            raise UserError(f"--image-size must be an integer from 8 to 512 pixels, got {self.image_size!r}")
        check_image_size(self.dataset, self.image_size)
        if self.final:
            self.val_size, self.patience = 0, 0  # no validation split: fixed settings, last epoch kept
        elif self.val_size is not None and (not isinstance(self.val_size, int) or isinstance(self.val_size, bool)
                                            or self.val_size <= 0):
            raise UserError(f"--val-size must be a positive integer (use --final to train on all training images), "
                            f"got {self.val_size!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        cfg = cls(**d)
        for f in dataclasses.fields(cls):  # JSON and --set give loose types; check them once here
            value, default = getattr(cfg, f.name), getattr(cls(), f.name)
            if isinstance(default, dict):
                if not isinstance(value, dict):
                    raise UserError(f"config field {f.name} must be a JSON object, got {value!r}")
                continue
            if value is None or default is None:
                continue
            if isinstance(default, bool) and not isinstance(value, bool):
                raise UserError(f"config field {f.name} must be true or false, got {value!r}")
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                setattr(cfg, f.name, float(value))
            elif isinstance(default, (int, float, str)) and not isinstance(value, type(default)):
                raise UserError(f"config field {f.name} must be {type(default).__name__}, got {value!r}")
        return cfg

    @classmethod
    def resolve(cls, recipe: str = "seed", overrides: dict | None = None, base: dict | None = None) -> RunConfig:
        """Recipe defaults (or a saved config `base`), then every override that is not None."""
        values = dict(base) if base is not None else {"recipe": recipe, **get_recipe(recipe)}
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(values).validate()


def parse_settings(pairs: list[str]) -> dict:
    """`--set FIELD=VALUE` pairs → typed overrides (VALUE read as JSON when it parses, else as text)."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UserError(f"--set expects FIELD=VALUE, got {pair!r}")
        if key not in names:
            raise UserError(f"unknown config field {key!r}; valid: {', '.join(sorted(names))}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def read_config_file(path: Path) -> dict:
    """A run's config.json (its "config" part) or a plain JSON object of config fields."""
    doc = read_json(path, "config file (--config)")
    doc = doc.get("config", doc)
    if not isinstance(doc, dict):
        raise UserError(f"--config {path} must hold a JSON object of config fields")
    return doc


def load_run_config(run_dir: Path) -> tuple[RunConfig, dict]:
    """(config, the whole config.json) of a run folder, validated like a new run's."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    doc = read_json(path, "run config")
    if not isinstance(doc.get("config"), dict):
        raise UserError(f"{path} is not a valid run config (no \"config\" object)")
    try:
        return RunConfig.from_dict(doc["config"]).validate(check_paths=False), doc
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{path} is not a valid run config ({e})") from None
