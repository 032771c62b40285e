"""Named training recipes: plain data. A recipe fills the fields of `RunConfig`; flags override it.

Units are in the names or comments: lr per step, epochs are passes over the training split.
"""

from __future__ import annotations

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
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name])
