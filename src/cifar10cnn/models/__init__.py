"""Models: the registry (registry.py), what each model declares (contract.py), and the classifier that puts the
input normalisation in front of a network (classifier.py). Importing this package registers every model.

    net = create_model("seed", num_classes=10)                    # the bare network (a ModelContract)
    model = build_classifier("seed", mean, std, num_classes=10)   # uint8 images in, logits out
"""

from __future__ import annotations

# importing the modules registers their models
from . import efficientnet_lite, fast, mobilenet, resnet, seed  # noqa: E402,F401,I001
from .classifier import (
                         Classifier,
                         Normalize,
                         build_classifier,
                         forward_flops,
                         input_normalization,
                         parameter_roles,
                         trainable_params,
)
from .contract import ModelContract
from .registry import create_model, list_models, register_model

__all__ = ["Classifier", "ModelContract", "Normalize", "build_classifier", "create_model", "forward_flops",
           "input_normalization", "list_models", "parameter_roles", "register_model", "trainable_params"]
