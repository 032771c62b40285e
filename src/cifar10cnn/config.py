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

from .errors import UserError
from .recipes import get_recipe


@dataclass
class RunConfig:
    recipe: str = "seed"
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
    val_size: int = 5_000
    subset: int | None = None  # a stratified slice of the training split, for quick runs
    eval_batch_size: int = 500
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp16 | fp32
    channels_last: bool = True
    threads: int | None = None  # CPU threads; default: all cores

    def validate(self) -> RunConfig:
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
        choices = {"optimizer": ("adam", "adamw", "sgd"), "monitor": ("val_loss", "val_accuracy"),
                   "precision": ("auto", "bf16", "fp16", "fp32")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise UserError(f"invalid {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"--threads must be a positive integer, got {self.threads}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def resolve(cls, recipe: str = "seed", overrides: dict | None = None) -> RunConfig:
        """Recipe defaults, then every override that is not None."""
        values = {"recipe": recipe, **get_recipe(recipe)}
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(values).validate()


def load_run_config(run_dir: Path) -> tuple[RunConfig, dict]:
    """(config, the whole config.json) of a run folder."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    try:
        doc = json.loads(path.read_text())
        return RunConfig.from_dict(doc["config"]), doc
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a valid run config ({e})") from None
