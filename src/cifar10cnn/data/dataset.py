"""What every run trains on, whichever the source: one uint8 tensor per split, the class names, and the
stratified train/validation split.

    --dataset cifar10            CIFAR-10 (the default; data/cifar.py)
    --dataset cifar100           CIFAR-100, its 100 fine classes (data/cifar.py)
    --dataset cifar100:coarse    CIFAR-100, its 20 superclasses
    --dataset folder:PATH        your images: one subfolder per class (data/folder.py)

`load_dataset` (data/loading.py) turns that name into an `ImageDataset`; the rest of the project (training, the report,
evaluate, export) never asks where the images came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..errors import UserError

CIFAR_NAMES = ("cifar10", "cifar100", "cifar100:coarse")
VAL_FRACTION = 0.1  # the default validation split: a tenth of the training images (5,000 of CIFAR's 50,000)


@dataclass
class ImageDataset:
    """The whole data set in memory: images uint8 N×S×S×3 (HWC), labels int64 N."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str
    val_idx: torch.Tensor | None = None  # rows of train_x the data set itself holds out for validation (val/)
    about: dict = field(default_factory=dict)  # how it was made (a folder's splits and skipped files)


@dataclass
class Split:
    """Indices into the training images: a stratified train / validation partition."""

    train_idx: torch.Tensor
    val_idx: torch.Tensor
    seed: int
    given: bool = False  # the data set's own validation images (a folder's val/), not drawn by `seed`


def canonical_name(name: str) -> str:
    """A --dataset value as config.json records it (a folder as its absolute path), or a UserError."""
    name = (name or "").strip()
    if name in CIFAR_NAMES:
        return name
    if name.startswith("folder:") and name[len("folder:"):].strip():
        return "folder:" + os.path.abspath(os.path.expanduser(name[len("folder:"):].strip()))
    raise UserError(f"unknown --dataset {name!r}; valid: cifar10, cifar100, cifar100:coarse, folder:PATH "
                    f"(one subfolder per class)")


def check_image_size(dataset: str, image_size: int) -> None:
    """Refuse (one line) a decode size other than 32 for CIFAR, whose images are 32×32: only folders are decoded."""
    if image_size != 32 and not dataset.startswith("folder:"):
        raise UserError(f"--image-size {image_size}: CIFAR images are 32×32; --image-size is for folder data sets")


def allocate(counts: list[int], total: int) -> list[int]:
    """`total` split over classes in proportion to `counts` (largest remainder; equal classes get equal
    shares, e.g. 500 each of CIFAR-10's 5,000 validation images)."""
    n = sum(counts)
    exact = [total * c / n for c in counts]
    share = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (share[i] - exact[i], i))
    for i in by_remainder[: total - sum(share)]:
        share[i] += 1
    return share


def make_split(labels: torch.Tensor, val_size: int | None = None, seed: int = 0, subset: int | None = None,
               n_classes: int | None = None, given_val: torch.Tensor | None = None) -> Split:
    """Stratified train/validation split of the training images, fixed by `seed`.

    val_size None: a tenth of the images. Each class gives its share of the validation images (in
    proportion to its size; equal for balanced data). given_val: the data set's own validation rows (a
    folder's val/ tree), used as they are (val_size must then be None). `subset` keeps a stratified slice of
    that many training images (for quick runs); the validation part is unchanged."""
    n_classes = n_classes or int(labels.max()) + 1
    if given_val is not None and val_size != 0:
        if val_size is not None and val_size != len(given_val):
            raise UserError(f"--val-size {val_size}: this data set's val/ folder is the validation set "
                            f"({len(given_val):,} images); leave --val-size out")
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[given_val] = False
        train_idx = rest.nonzero().flatten()
        return Split(_stratified_subset(train_idx, labels, n_classes, subset), given_val.sort().values, 0, given=True)
    if val_size is None:
        val_size = round(VAL_FRACTION * len(labels))
    if not 0 <= val_size < len(labels):
        raise UserError(f"--val-size must be between 0 and {len(labels) - 1:,}, got {val_size}")
    counts = labels.bincount(minlength=n_classes).tolist()
    per_class_val = allocate(counts, val_size)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    train_parts, val_parts = [], []
    for c in range(n_classes):
        idx = perm[labels[perm] == c]
        if len(idx) <= per_class_val[c]:
            raise UserError(f"--val-size {val_size} leaves no training images of class {c}")
        val_parts.append(idx[:per_class_val[c]])
        train_parts.append(idx[per_class_val[c]:])
    train_idx = _stratified_subset(torch.cat(train_parts), labels, n_classes, subset, train_parts)
    return Split(train_idx, torch.cat(val_parts).sort().values, seed)  # _stratified_subset returns it sorted


def _stratified_subset(train_idx: torch.Tensor, labels: torch.Tensor, n_classes: int, subset: int | None,
                       parts: list[torch.Tensor] | None = None) -> torch.Tensor:
    """`subset` training images with the classes interleaved (so any prefix stays stratified), or all."""
    if subset is None:
        return train_idx.sort().values
    if subset < n_classes or subset > len(train_idx):
        raise UserError(f"--subset must be between {n_classes} and {len(train_idx):,}, got {subset}")
    parts = parts if parts is not None else [train_idx[labels[train_idx] == c] for c in range(n_classes)]
    stacked = torch.stack([p[: min(len(q) for q in parts)] for p in parts], dim=1).flatten()
    if subset > len(stacked):
        raise UserError(f"--subset {subset:,}: the smallest class leaves {len(stacked):,} images when every class "
                        f"gives as many; ask for at most that")
    return stacked[:subset].sort().values


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (on the 0–1 scale) of N×H×W×3 uint8 images."""
    x = images.reshape(-1, 3).double() / 255.0
    return x.mean(0).tolist(), x.std(0).tolist()
