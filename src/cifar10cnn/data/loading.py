"""`--dataset NAME` → the ImageDataset every command trains and evaluates on (data/dataset.py names them)."""

from __future__ import annotations

from pathlib import Path

from .cifar import load_cifar
from .dataset import ImageDataset, canonical_name, check_image_size
from .folder import FolderLimits, load_folder


def load_dataset(name: str = "cifar10", data_dir=None, cache_dir=None,
                 limits: FolderLimits | None = None, image_size: int = 32) -> ImageDataset:
    """The data set called `name` (data/dataset.py). data_dir: the CIFAR folder (or $CIFAR10_DIR /
    $CIFAR100_DIR); limits: a folder's FolderLimits (memory, unreadable files); image_size: the side a folder's
    images are decoded to (CIFAR's are 32×32)."""
    name = canonical_name(name)
    if name.startswith("folder:"):
        return load_folder(Path(name[len("folder:"):]), cache_dir, limits, image_size)
    check_image_size(name, image_size)
    return load_cifar(name, data_dir, cache_dir)
