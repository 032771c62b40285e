"""Data: CIFAR-10 download, validation, uint8 cache and the stratified train/validation split."""

from .cifar10 import CIFAR10, Split, load_cifar10, make_split

__all__ = ["CIFAR10", "Split", "load_cifar10", "make_split"]
