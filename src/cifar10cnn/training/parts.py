"""One place builds what a run trains with — `train`, `bench` and the time-budget probe all use it.

    build_model(cfg, ...)        the classifier: seeded weights, then its declared data-dependent init (or
                                 another run's weights), placed on the device
    build_parts(cfg, model, rt)  what trains it: parameter groups from the model's declared roles, optimizer,
                                 gradient scaler (fp16), weight average (EMA), Lookahead, batch augmentation,
                                 torch.compile of the training step
    resident_data(...)           the data set on the device as uint8 (or cached features), split by index
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import RunConfig
from ..data.augment import Augment
from ..data.cifar import default_cache_dir
from ..data.dataset import ImageDataset, Split, channel_stats
from ..errors import UserError
from ..models import Classifier, ModelContract, build_classifier, input_normalization, parameter_roles
from ..runtime import Runtime
from ..weights import load_into, read_weights
from .ema import Lookahead, ModelEMA
from .features import features_for
from .muon import MuonSGD


@dataclass
class Parts:
    model: Classifier  # the whole classifier: checkpointed, and (without EMA) saved as the run's weights
    fit: nn.Module  # what the optimizer trains: the model, or (linear probe) its head
    step_model: nn.Module  # `fit` as the training step calls it (compiled with cfg.compile)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    lookahead: Lookahead | None
    augment: Augment | None

    @property
    def eval_model(self) -> nn.Module:
        """What validation evaluates: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.fit

    @property
    def saved_model(self) -> nn.Module:
        """What model.safetensors holds: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def extra(self) -> dict[str, nn.Module] | None:
        """Modules checkpointed beside the model and optimizer."""
        extra = {**({"ema": self.ema.module} if self.ema is not None else {}),
                 **({"lookahead": self.lookahead.module} if self.lookahead is not None else {})}
        return extra or None


@dataclass
class Resident:
    """The data a run touches, resident on the device; the loop picks batches by index."""
    train_x: torch.Tensor  # all training images (uint8 N×32×32×3), or a linear probe's cached features
    train_y: torch.Tensor
    train_idx: torch.Tensor  # the training split's indices into train_x
    val_x: torch.Tensor
    val_y: torch.Tensor
    sample_x: torch.Tensor  # a fixed sample of the training split, evaluated like validation (the honest gap)
    sample_y: torch.Tensor
    features_seconds: float | None = None  # the frozen backbone's pass (or cache read) of a linear probe


def data_init_sample(train_idx: torch.Tensor, seed: int, n: int = 5_000) -> torch.Tensor:
    """The training images a data-dependent initialisation (a whitening stem) is computed from."""
    g = torch.Generator().manual_seed(seed)
    return train_idx[torch.randperm(len(train_idx), generator=g)[:n]]


def build_model(cfg: RunConfig, data: ImageDataset, split: Split, runtime: Runtime,
                stats: tuple[list[float], list[float]] | None = None) -> tuple[Classifier, dict]:
    """(the placed classifier of a new run, the weights metadata saved with it). stats: the split's training images'
    channel_stats when already known (they take ~2 s for CIFAR-10 on a 2-core CPU: the recipe picker's candidates
    share them)."""
    mean, std = stats or channel_stats(data.train_x[split.train_idx])
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, mean, std, len(data.classes), **cfg.model_options)
    if cfg.image_size != model.net.input_size:
        check_takes(model, cfg)
    if cfg.init_from:  # e.g. fine-tuning that starts from a linear probe's head (LP-FT)
        init_path = Path(cfg.init_from) / "model.safetensors"
        load_into(model, read_weights(init_path)[0], init_path)
    elif model.net.needs_data_init:  # declared by the model, e.g. a whitening stem computed from the data
        sample = data.train_x[data_init_sample(split.train_idx, cfg.seed)]
        model.net.init_from_data(model.normalize(sample.permute(0, 3, 1, 2)))
    roles = set().union(*parameter_roles(model).values())
    if cfg.whiten_bias_epochs and "whiten_bias" not in roles:
        raise UserError(f"whiten_bias_epochs is for models with a whitening stem (fast); {cfg.model} has none")
    model = runtime.place(model)
    mean, std = input_normalization(model.net, mean, std)  # a pretrained network brings its own scaling
    meta = {"model": cfg.model, "model_options": cfg.model_options, "classes": data.classes, "mean": mean, "std": std,
            **({"image_size": cfg.image_size} if cfg.image_size != model.net.input_size else {})}
    return model, meta


def check_takes(model: Classifier, cfg: RunConfig) -> None:
    """Refuse, in one line, a network that cannot take image_size×image_size images (e.g. a fixed-size head)."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8))
    except RuntimeError as e:
        raise UserError(f"model {cfg.model} cannot take {cfg.image_size}×{cfg.image_size} images (it is built for "
                        f"{model.net.input_size}×{model.net.input_size}: {str(e).splitlines()[0][:120]}); choose "
                        f"another --image-size or a model with global pooling (`cifar10cnn models`)") from None
    finally:
        model.train()


def make_optimizer(cfg: RunConfig, fit: nn.Module, runtime: Runtime, roles: dict[int, set[str]] | None = None
                   ) -> torch.optim.Optimizer:
    """Parameter groups by (weight decay, lr scale, last epoch), from the roles the model declares:
    - no weight decay on "no_decay" parameters (by default the 1-D ones: biases, norm scales) unless
      `decay_bn_bias`;
    - everything but the "head" at `backbone_lr_scale` × the learning rate;
    - "norm" parameters at `norm_lr_scale` × the learning rate, their weight-decay coefficient divided by
      the same factor, so the decay per step (lr × coefficient with PyTorch's coupled decay) is unchanged;
    - a "whiten_bias" trained for `whiten_bias_epochs` only (the group's "until_epoch");
    - optimizer "muon": the convolution filters (4-D, outside the head) take Muon's step at `muon_lr` with
      `muon_momentum` (training/muon.py); every other parameter takes SGD, the head at `lr`, the rest (biases,
      norm parameters) at `norm_lr_scale` × `lr` as airbench94_muon's bias group.
    roles: {id(parameter): roles} (models.parameter_roles), by default those `fit` declares."""
    if roles is None:  # a registered network declares them; any other module gets the default "no_decay" rule
        roles = parameter_roles(fit) if isinstance(fit, (Classifier, ModelContract)) else \
            {id(p): {"no_decay"} for p in fit.parameters() if p.ndim <= 1}
    muon = cfg.optimizer == "muon"
    grouped: dict[tuple[float, float, int, bool], list] = {}
    for p in fit.parameters():
        if p.requires_grad:
            role = roles.get(id(p), set())
            filters = muon and p.ndim == 4 and "head" not in role
            decay = cfg.decay_bn_bias or cfg.weight_decay == 0 or "no_decay" not in role
            scale = 1.0 if "head" in role else cfg.backbone_lr_scale
            norm_scale = cfg.norm_lr_scale if "norm" in role or (muon and "head" not in role) else 1.0
            until = cfg.whiten_bias_epochs if "whiten_bias" in role else 0
            key = (0.0, cfg.muon_lr / cfg.lr, until, True) if filters else \
                (cfg.weight_decay / norm_scale if decay else 0.0, scale * norm_scale, until, False)
            grouped.setdefault(key, []).append(p)
    groups = [{"params": params, "lr": cfg.lr * scale, "lr_scale": scale, "weight_decay": wd,
               **({"until_epoch": until} if until else {}),
               **({"muon": is_muon, "momentum": cfg.muon_momentum if is_muon else cfg.momentum} if muon else {})}
              for (wd, scale, until, is_muon), params in grouped.items()]
    if muon:
        return MuonSGD(groups)
    # fused kernels: one update for all tensors (measured +4% img/s on the seed model at batch 32)
    fused = {"fused": True} if runtime.device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.adam_eps, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps, **fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def build_parts(cfg: RunConfig, model: Classifier, runtime: Runtime, wrap: Callable | None = None) -> Parts:
    """Everything that trains `model` (placed on the device) under `cfg`. wrap(fit) → the module the training
    step calls (e.g. DistributedDataParallel around the same parameters)."""
    roles = parameter_roles(model)
    fit: nn.Module = model
    if cfg.linear_probe:  # only the declared head trains, on features of the frozen backbone
        model.requires_grad_(False)
        fit = model.net.get_classifier().requires_grad_(True)
    optimizer = make_optimizer(cfg, fit, runtime, roles)
    step_model = wrap(fit) if wrap is not None else fit
    step_model = torch.compile(step_model) if cfg.compile else step_model  # the same parameters; only the step compiles
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    lookahead = Lookahead(fit, cfg.lookahead_every) if cfg.lookahead_every > 0 else None
    augment = Augment(cfg.crop_padding, cfg.pad_mode, cfg.flip, cfg.cutout, seed=cfg.seed)
    return Parts(model, fit, step_model, optimizer, scaler, ema, lookahead, augment if augment.active else None)


def resident_data(cfg: RunConfig, data: ImageDataset, split: Split, runtime: Runtime, model: Classifier,
                  cache_dir=None) -> Resident:
    """The whole data set on the device as uint8 — or, for a linear probe, the frozen backbone's features
    (computed once and cached) in the same rows — with the split's validation set and the train sample."""
    inputs, features_s = data.train_x, None
    if cfg.linear_probe:
        t0 = time.perf_counter()
        inputs = features_for(model, data.train_x, torch.cat([split.train_idx, split.val_idx]), runtime,
                              Path(cache_dir or default_cache_dir()), cfg.model, cfg.model_options)
        features_s = round(time.perf_counter() - t0, 2)
    train_x, train_y = inputs.to(runtime.device), data.train_y.to(runtime.device)
    val = split.val_idx.to(runtime.device)
    g_sample = torch.Generator(device="cpu").manual_seed(cfg.split_seed)
    sample = split.train_idx[torch.randperm(len(split.train_idx), generator=g_sample)[:cfg.train_eval_images]]
    sample = sample.to(runtime.device)
    return Resident(train_x, train_y, split.train_idx.to(runtime.device), train_x[val], train_y[val],
                    train_x[sample], train_y[sample], features_s)


def schedule_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the schedule set, before each group's "lr_scale" (BN parameters ×64, a backbone ×0.1,
    a frozen whitening bias ×0): what the history's lr column shows."""
    for group in optimizer.param_groups:
        if group.get("lr_scale", 1.0):
            return group["lr"] / group.get("lr_scale", 1.0)
    return 0.0


def freeze_finished_groups(optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Groups whose "until_epoch" has passed stop training (lr 0: no step, no weight decay)."""
    for group in optimizer.param_groups:
        if group.get("until_epoch") and epoch > group["until_epoch"]:
            group["lr_scale"] = group["lr"] = 0.0
