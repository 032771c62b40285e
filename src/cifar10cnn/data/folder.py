"""Your own images → an ImageDataset: one subfolder per class, decoded once, then trained from memory.

Two layouts (hidden files and folders, names starting with ".", are ignored):

    PATH/cat/*.jpg  PATH/dog/*.png ...          a stratified test split (a fifth, seed 0) is held out
    PATH/train/<class>/...  [PATH/val/<class>/...]  [PATH/test/<class>/...]
                                                val/ (or valid/, validation/) is then the validation set,
                                                test/ the test set (else held out of train/ as above)

Images may be of any size, format and mode that `predict` reads (data/images.py: PNG, JPEG, BMP, WebP; EXIF
orientation, grey, palette, RGBA, 16-bit) and sit in sub-subfolders; symlinks are followed (a loop is an
error). Each is decoded to 32×32 RGB uint8 (S×S with --image-size S) the way `predict` and `serve` decode a
file: the model sees the same pixels at training and at prediction time.

Decoding runs on every core with a progress bar; the result is cached per file in
`<cache>/folders/<key>/` (key: the folder's absolute path and the image size) with each file's size and
mtime, so an unchanged tree loads in seconds and a changed or added file is the only one decoded again. Memory is
estimated from the file count before anything is decoded.

Files that cannot be decoded are skipped and listed (`cifar10cnn data --dataset folder:PATH`); past
`max_unreadable` of the images the load is refused. Exact duplicate files (same bytes) across the train,
validation and test images are counted and warned about: they make a test accuracy look better than it is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write_json, file_lock
from ..progress import console, image_progress
from .cifar import default_cache_dir, save_npy
from .dataset import ImageDataset, make_split
from .images import EXTENSIONS, ImageError, MemoryBudget, decode_with_size

SIZE = 32
TEST_FRACTION = 0.2  # of each class, held out as the test set when the folder has no test/
TEST_SEED = 0  # fixed: every run on a folder tests on the same images
CACHE_VERSION = 1
MAX_FILE_BYTES = 64 * 2**20  # a larger file is not read (a photo is a few MB)
DECODE_BUDGET = 512 * 2**20  # decoded pixels held at once by all decode threads
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class FolderLimits:
    """What loading a folder may cost: memory for the decoded images, and the share of unreadable images."""

    max_memory_gib: float | None = None  # None: half of this machine's RAM
    max_unreadable: float = 0.01  # a larger fraction of images that cannot be decoded refuses the load

    def memory_bytes(self) -> int:
        if self.max_memory_gib is not None:
            return int(self.max_memory_gib * 2**30)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


@dataclass
class Entry:
    rel: str  # path relative to the root, "/"-separated
    split: str  # train | val | test
    label: int
    size: int
    mtime_ns: int


@dataclass
class Scan:
    root: Path
    classes: list[str]
    entries: list[Entry]
    trees: bool  # the train/ (val/, test/) layout
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) files that are not images
    empty: list[str] = field(default_factory=list)  # class folders without an image ("train/cat")


# --- finding the files ----------------------------------------------------------------------------


def _listdir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"symlink loop at {folder}") from None
        raise UserError(f"cannot read folder {folder}: {e.strerror or e}") from None


def _walk(folder: Path, above: frozenset = frozenset()) -> Iterator[tuple[str, os.stat_result | str]]:
    """Every file under `folder` (its path as a string; symlinks followed) with its stat, or a reason it cannot
    be read."""
    try:
        st = folder.stat()
    except OSError as e:
        raise UserError(f"symlink loop at {folder}" if e.errno == errno.ELOOP
                        else f"cannot read folder {folder}: {e.strerror or e}") from None
    here = (st.st_dev, st.st_ino)
    if here in above:
        raise UserError(f"symlink loop: {folder} leads back to a folder above it")
    for e in _listdir(folder):
        path = e.path
        try:
            if e.is_dir():
                yield from _walk(Path(path), above | {here})
            elif e.is_file():
                yield path, e.stat()
            else:
                os.stat(path)  # a link to nothing, or to itself
                yield path, "not a regular file"
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UserError(f"symlink loop at {path}") from None
            yield path, f"cannot read: {err.strerror or err}"


def _class_folders(folder: Path, where: str) -> list[str]:
    names = [e.name for e in _listdir(folder) if e.is_dir()]
    bad = [n for n in names if not CLASS_NAME.match(n)]
    if bad:
        raise UserError(f"class folder {where}{bad[0]!r} has a space or a character other than ASCII letters, "
                        f"digits and _ . + -: rename it (class names go into file names, URLs and ONNX metadata)")
    return names


def scan_folder(root: Path) -> Scan:
    """The files and classes of a folder data set; every structural problem is one UserError."""
    root = Path(os.path.abspath(Path(root).expanduser()))  # absolute (symlinks kept): relative paths are cut from it
    if not root.exists() and not root.is_symlink():
        raise UserError(f"folder data set not found: {root}")
    if not root.is_dir():
        raise UserError(f"folder data set {root} is not a folder (expected one subfolder per class)")
    top = [e for e in _listdir(root) if e.is_dir()]
    trees = any(e.name == "train" for e in top)
    if trees:
        odd = [e.name for e in top if e.name not in SPLIT_NAMES]
        if odd:
            raise UserError(f"{root} has train/ and also {odd[0]}/: beside train/ only val/ (valid/, validation/) "
                            f"and test/ are expected")
        splits = {SPLIT_NAMES[e.name]: e.name for e in top}
        if len(splits) != len(top):
            raise UserError(f"{root} has more than one validation folder ({', '.join(e.name for e in top)})")
    else:
        splits = {"train": ""}
    per_split = {s: _class_folders(root / d, f"{d}/" if d else "") for s, d in splits.items()}
    classes = per_split["train"]
    if not classes:
        raise UserError(f"{root} has no class folders: put each class's images in a subfolder named after it "
                        f"({root}/cat/..., {root}/dog/...)")
    if len(classes) < 2:
        raise UserError(f"{root} has one class folder ({classes[0]}): a classifier needs at least two classes")
    for s, names in per_split.items():
        if s != "train" and set(names) != set(classes):
            extra, missing = sorted(set(names) - set(classes)), sorted(set(classes) - set(names))
            raise UserError(f"{splits[s]}/ and train/ have different classes ("
                            + "; ".join(x for x in [f"only in {splits[s]}/: {', '.join(extra)}" if extra else "",
                                                    f"missing in {splits[s]}/: {', '.join(missing)}" if missing else ""]
                                        if x) + ")")
    scan = Scan(root, classes, [], trees)
    for name in [e.name for e in _listdir(root) if not e.is_dir()] if not trees else []:
        scan.skipped.append((name, "not in a class folder"))
    for s, d in splits.items():
        base = root / d if d else root
        for label, c in enumerate(classes):
            found, start = 0, len(str(root)) + 1
            for path, st in _walk(base / c):
                rel = path[start:].replace(os.sep, "/")  # paths below root, as strings: fast on 100,000 files
                dot = path.rfind(".")
                suffix = path[dot:] if dot > path.rfind(os.sep) + 1 else ""
                if isinstance(st, str):
                    scan.skipped.append((rel, st))
                elif suffix.lower() not in EXTENSIONS:
                    scan.skipped.append((rel, f"not an image file ({suffix or 'no extension'})"))
                else:
                    scan.entries.append(Entry(rel, s, label, st.st_size, st.st_mtime_ns))
                    found += 1
            if not found:
                scan.empty.append(f"{d}/{c}" if d else c)
    return scan


# --- decoding, with the per-file cache ---------------------------------------------------------------


@dataclass
class Decoded:
    images: np.ndarray  # N×32×32×3 uint8, one row per entry (zeros where unreadable)
    ok: np.ndarray  # bool N
    errors: dict[str, str]  # rel → why it could not be decoded
    digests: list[str]  # sha1 of each file's bytes ("" if unread)
    sizes: list[tuple[int, int]]  # stored (width, height), (0, 0) if unread
    decoded_now: int  # how many files this call decoded (the rest came from the cache)
    seconds: float


def _cache_dir(root: Path, cache_dir, size: int) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{root.resolve()}".encode()).hexdigest()[:16]
    return cache / "folders" / key


def _read_cache(folder: Path, size: int) -> tuple[dict, np.ndarray | None]:
    try:
        index = json.loads((folder / "index.json").read_text())
        images = np.load(folder / "images.npy", allow_pickle=False)
        if index.get("version") == CACHE_VERSION and images.shape[1:] == (size, size, 3) and \
                images.dtype == np.uint8:
            return {tuple(r[:3]): r for r in index["files"]}, images
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache, or a damaged one: decoded again
    return {}, None


def _decode_one(path: Path, n_bytes: int, budget: MemoryBudget, size: int
                ) -> tuple[np.ndarray | None, str, tuple[int, int], str]:
    """(size×size×3 image or None, sha1 of the bytes, stored size, error or "")."""
    if n_bytes > MAX_FILE_BYTES:
        return None, "", (0, 0), (f"file too large ({n_bytes / 2**20:,.0f} MB; limit "
                                  f"{MAX_FILE_BYTES / 2**20:,.0f} MB)")
    try:
        blob = path.read_bytes()
    except OSError as e:
        return None, "", (0, 0), f"cannot read: {e.strerror or e}"
    digest = hashlib.sha1(blob).hexdigest()
    try:
        array, wh = decode_with_size(blob, budget=budget, size=size)
        return array, digest, wh, ""
    except ImageError as e:
        return None, digest, (0, 0), str(e)


def decode_folder(scan: Scan, cache_dir=None, limits: FolderLimits | None = None, threads: int | None = None,
                  size: int = SIZE) -> Decoded:
    """Every entry's size×size image: from the cache when its file is unchanged, else decoded (in parallel)."""
    import time

    limits = limits or FolderLimits()
    t0 = time.perf_counter()
    n = len(scan.entries)
    need = n * size * size * 3 * 3  # the images, the cache read back, the training tensors built from them
    if need > limits.memory_bytes():
        raise UserError(f"{scan.root}: {n:,} images need {need / 2**30:,.1f} GiB of memory at {size}×{size} (limit "
                        f"{limits.memory_bytes() / 2**30:,.1f} GiB); raise it with --data-memory GIB")
    folder = _cache_dir(scan.root, cache_dir, size)
    with file_lock(folder.parent / f".{folder.name}.lock"):  # one process decodes; the next one reads the cache
        known, cached = _read_cache(folder, size)
        ok = np.zeros(n, bool)
        errors: dict[str, str] = {}
        digests, sizes = [""] * n, [(0, 0)] * n
        todo, hits, rows = [], [], []
        for i, e in enumerate(scan.entries):
            hit = known.get((e.rel, e.size, e.mtime_ns))
            if hit is None or cached is None or (hit[3] >= 0 and hit[3] >= len(cached)):
                todo.append(i)
                continue
            _, _, _, row, digests[i], w, h, err = hit
            sizes[i] = (w, h)
            if row >= 0:
                hits.append(i)
                rows.append(row)
            else:
                errors[e.rel] = err
        ok[hits] = True
        if not todo and cached is not None and rows == list(range(len(cached))):
            images = cached  # the tree is unchanged: the cache is the array, no copy
        else:
            images = np.zeros((n, size, size, 3), np.uint8)
            if hits:  # one copy for all the unchanged files
                images[hits] = cached[rows]
        del cached
        if todo:
            budget, lock = MemoryBudget(DECODE_BUDGET), threading.Lock()
            workers = threads or os.cpu_count() or 1
            with image_progress(f"decoding {scan.root.name}", len(todo)) as advance, \
                    ThreadPoolExecutor(workers) as pool:
                def work(i: int) -> None:
                    e = scan.entries[i]
                    array, digest, wh, err = _decode_one(scan.root / e.rel, e.size, budget, size)
                    digests[i], sizes[i] = digest, wh
                    if array is None:
                        errors[e.rel] = err
                    else:
                        images[i], ok[i] = array, True
                    with lock:
                        advance(1)

                list(pool.map(work, todo))
            _write_cache(folder, scan, images, ok, errors, digests, sizes)
    return Decoded(images, ok, errors, digests, sizes, len(todo), time.perf_counter() - t0)


def _write_cache(folder: Path, scan: Scan, images: np.ndarray, ok: np.ndarray, errors: dict, digests: list,
                 sizes: list) -> None:
    rows = np.cumsum(ok) - 1
    files = [[e.rel, e.size, e.mtime_ns, int(rows[i]) if ok[i] else -1, digests[i], *sizes[i], errors.get(e.rel, "")]
             for i, e in enumerate(scan.entries)]
    try:
        save_npy(folder / "images.npy", images[ok])
        atomic_write_json(folder / "index.json", {"version": CACHE_VERSION, "root": str(scan.root), "files": files})
    except OSError:
        pass  # caching is an optimisation; a read-only cache folder must not stop training


# --- the data set ----------------------------------------------------------------------------------


def inspect_folder(root: Path, cache_dir=None, limits: FolderLimits | None = None, size: int = SIZE
                   ) -> tuple[Scan, Decoded, dict]:
    """Scan and decode a folder; (scan, decoded, about): about holds the counts per split and class, the
    unreadable and skipped files, the duplicates across splits and the stored image sizes."""
    scan = scan_folder(root)
    dec = decode_folder(scan, cache_dir, limits, size=size)
    splits = sorted({e.split for e in scan.entries}, key=["train", "val", "test"].index)
    counts = {s: [0] * len(scan.classes) for s in splits}
    for e, good in zip(scan.entries, dec.ok, strict=True):
        if good:
            counts[e.split][e.label] += 1
    first_split: dict[str, str] = {}
    duplicates = {"within_a_split": 0, "across_splits": 0, "examples": []}
    for e, digest in zip(scan.entries, dec.digests, strict=True):
        if not digest:
            continue
        if digest in first_split:
            kind = "across_splits" if first_split[digest].split("/")[0] != e.split else "within_a_split"
            duplicates[kind] += 1
            if len(duplicates["examples"]) < 5:
                duplicates["examples"].append([first_split[digest].split("/", 1)[1], e.rel])
        else:
            first_split[digest] = f"{e.split}/{e.rel}"
    about = {"root": str(scan.root), "layout": "train/val/test folders" if scan.trees else "class folders",
             "images": int(dec.ok.sum()), "counts": counts, "unreadable": dict(sorted(dec.errors.items())),
             "skipped": scan.skipped, "empty_classes": scan.empty, "duplicates": duplicates,
             "decoded_now": dec.decoded_now, "seconds": round(dec.seconds, 2),
             "sizes": size_histogram([wh for wh, good in zip(dec.sizes, dec.ok, strict=True) if good])}
    return scan, dec, about


def size_histogram(sizes: list[tuple[int, int]]) -> dict[str, int]:
    """Stored image sizes by their shorter side: {"≤32": n, "33–64": n, ..., "> 1024": n}; "exactly 32×32"."""
    edges = [32, 64, 128, 256, 512, 1024]
    out = {f"≤{edges[0]}": 0, **{f"{a + 1}–{b}": 0 for a, b in zip(edges, edges[1:], strict=False)},
           f">{edges[-1]}": 0}
    for w, h in sizes:
        s = min(w, h)
        label = next((k for k, edge in zip(out, edges, strict=False) if s <= edge), f">{edges[-1]}")
        out[label] += 1
    return out


def check_usable(scan: Scan, about: dict, limits: FolderLimits) -> None:
    """Refuse a folder that cannot train honestly: a class without training images, too many unreadable."""
    train_empty = [c for c in scan.empty if not scan.trees or c.startswith("train/")]
    if train_empty:
        raise UserError(f"{scan.root}: class folder {train_empty[0]} has no images ({', '.join(EXTENSIONS)}); "
                        f"remove it or add images")
    n_bad, n_all = len(about["unreadable"]), len(scan.entries)
    if n_all and n_bad > limits.max_unreadable * n_all:
        first = next(iter(about["unreadable"].items()))
        raise UserError(f"{scan.root}: {n_bad:,} of {n_all:,} images cannot be decoded (more than "
                        f"{limits.max_unreadable:.0%}; first: {first[0]}: {first[1]}); list them with `cifar10cnn "
                        f"data --dataset folder:{scan.root}`, or accept more with --max-unreadable FRACTION")
    for (split, counts) in about["counts"].items():
        if split == "train" and min(counts) == 0:
            raise UserError(f"{scan.root}: class {scan.classes[counts.index(0)]} has no readable training image")


def load_folder(root: Path, cache_dir=None, limits: FolderLimits | None = None, size: int = SIZE) -> ImageDataset:
    """The folder as a data set of size×size images (see the module docstring)."""
    limits = limits or FolderLimits()
    scan, dec, about = inspect_folder(root, cache_dir, limits, size)
    check_usable(scan, about, limits)
    labels = np.array([e.label for e in scan.entries], np.int64)
    split = np.array([e.split for e in scan.entries])
    keep = {s: np.flatnonzero((split == s) & dec.ok) for s in ("train", "val", "test")}
    x = torch.from_numpy(dec.images)
    y = torch.from_numpy(labels)
    train_rows = torch.from_numpy(np.concatenate([keep["train"], keep["val"]]))
    train_x, train_y = x[train_rows], y[train_rows]
    val_idx = torch.arange(len(keep["train"]), len(train_rows)) if len(keep["val"]) else None
    if len(keep["test"]):
        test_x, test_y = x[keep["test"]], y[keep["test"]]
        about["test_from"] = "the test/ folder"
    else:  # a fixed stratified fifth of the training images is the test set
        held = make_split(train_y, round(TEST_FRACTION * len(train_y)), TEST_SEED, n_classes=len(scan.classes))
        test_x, test_y = train_x[held.val_idx], train_y[held.val_idx]
        train_x, train_y = train_x[held.train_idx], train_y[held.train_idx]
        about["test_from"] = f"a stratified {TEST_FRACTION:.0%} of the images (seed {TEST_SEED})"
    about["val_from"] = "the val/ folder" if val_idx is not None else "drawn from the training images"
    warn(scan, about)
    return ImageDataset(train_x.contiguous(), train_y, test_x.contiguous(), test_y, scan.classes, str(scan.root),
                        val_idx, about)


def warn(scan: Scan, about: dict) -> None:
    """One line per problem that does not stop a run: unreadable images skipped, duplicates across splits."""
    where = f"`cifar10cnn data --dataset folder:{scan.root}` lists them"
    if about["unreadable"]:
        console.print(f"warning: skipped {len(about['unreadable']):,} image(s) that cannot be decoded ({where})")
    dup = about["duplicates"]
    if dup["across_splits"] or (dup["within_a_split"] and not scan.trees):
        what = (f"{dup['across_splits']:,} file(s) are exact copies of files in another split (train/val/test)"
                if scan.trees else f"{dup['within_a_split']:,} file(s) are exact copies of other files, so some may "
                                   f"be both trained on and tested")
        console.print(f"warning: {what}: the test figures may look better than they are ({where})")


def folder_summary(data: ImageDataset) -> dict:
    """What config.json records of a folder data set: its layout, where validation and test come from, and
    how many files were skipped or duplicated (the lists: `cifar10cnn data --dataset folder:PATH`)."""
    a = data.about
    if not a:
        return {}
    return {"folder": {"layout": a["layout"], "test_from": a["test_from"], "val_from": a["val_from"],
                       "unreadable_images": len(a["unreadable"]), "skipped_files": len(a["skipped"]),
                       "duplicate_files": a["duplicates"]["within_a_split"] + a["duplicates"]["across_splits"]}}
