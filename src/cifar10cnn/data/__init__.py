"""Data: CIFAR-10, CIFAR-100 and folders of images (download, validation, uint8 cache) and the stratified
train/validation split."""

from .cifar import load_cifar10
from .dataset import ImageDataset, Split, make_split
from .loading import load_dataset

__all__ = ["ImageDataset", "Split", "load_cifar10", "load_dataset", "make_split"]
