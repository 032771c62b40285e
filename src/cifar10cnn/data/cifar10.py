"""CIFAR-10 on disk → one uint8 tensor per split, validated, cached and split.

Where the data comes from, in order:
  1. ``--data-dir`` (or the ``CIFAR10_DIR`` environment variable): the ``cifar-10-batches-py``
     folder itself or a folder that contains it. It is only read, never written (it may be read-only).
  2. otherwise ``<cache>/cifar-10-batches-py``, downloaded from the official URL when missing
     (progress bar, md5 check, extraction that refuses paths leaving the target folder).

Parsed arrays are cached as ``.npy`` files in ``<cache>/arrays/<key>/`` (``--cache-dir`` or
``CIFAR10CNN_CACHE``, default ``~/.cache/cifar10cnn``), so a reload takes a fraction of a second.

Images are kept as ``N×32×32×3`` uint8 (HWC, the order of image files). Seen as a tensor of shape
``N×3×32×32`` through ``permute(0, 3, 1, 2)``, that is exactly PyTorch's channels_last layout,
so batches go to a channels_last network without a copy.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_write, file_lock
from ..progress import download_progress

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
N_TRAIN, N_TEST, N_CLASSES = 50_000, 10_000, 10
MAX_BATCH_BYTES = 64 * 2**20  # a batch file is ~31 MB; anything far larger is refused before unpickling
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIFAR10CNN_CACHE") or Path.home() / ".cache" / "cifar10cnn")


@dataclass
class CIFAR10:
    """The whole data set in memory: images uint8 N×32×32×3, labels int64 N."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str


@dataclass
class Split:
    """Indices into the official training set: a stratified train / validation partition."""

    train_idx: torch.Tensor
    val_idx: torch.Tensor
    seed: int


# ---------------------------------------------------------------------------------------------
# Reading the official pickles without executing arbitrary code


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files and nothing else.

    The official files are Python 2 pickles of a dict holding a numpy array. A plain
    ``pickle.load`` would run any callable a crafted file names; this one resolves only the
    numpy globals needed to rebuild an ndarray (and the str→bytes codec of Python 3 pickles) and
    refuses every other global.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles (str → bytes, harmless)
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
        return getattr(np, name)


def _read_pickle(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise UserError(f"CIFAR-10 file {path} is {size:,} bytes; a batch file is about 31 MB")
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise UserError(f"CIFAR-10 file missing: {path}") from None
    except UserError:
        raise
    except Exception as e:  # any parse failure means a corrupt or foreign file
        raise UserError(f"CIFAR-10 file {path} is corrupt or not a CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR-10 file {path} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path)
    if "data" not in d or "labels" not in d:
        raise UserError(f"CIFAR-10 file {path} lacks 'data' or 'labels'")
    data = np.asarray(d["data"])
    try:
        labels = np.asarray(d["labels"])
    except (ValueError, TypeError) as e:
        raise UserError(f"CIFAR-10 file {path}: labels are not a list of integers ({e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"CIFAR-10 file {path}: images must be uint8 rows of 3072 values, "
                        f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(f"CIFAR-10 file {path}: labels must be a list of integers, got {labels.dtype} "
                        f"{'scalar' if labels.ndim == 0 else labels.shape}")
    if labels.shape != (data.shape[0],):
        raise UserError(f"CIFAR-10 file {path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise UserError(f"CIFAR-10 file {path}: labels must be 0–9, found {labels.min()}..{labels.max()}")
    # rows are 1024 R, 1024 G, 1024 B values of a row-major 32×32 image → N×32×32×3
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_batches(folder: Path) -> CIFAR10:
    """Parse and validate the official layout (5 training batches, 1 test batch, batches.meta)."""
    folder = Path(folder)
    n_train, n_test = N_TRAIN, N_TEST
    missing = [f for f in [*TRAIN_FILES, TEST_FILE, META_FILE] if not (folder / f).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}")
    meta = _read_pickle(folder / META_FILE)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != N_CLASSES:
        raise UserError(f"{folder / META_FILE}: expected 10 label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    parts = [_read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / TEST_FILE)
    if len(train_x) != n_train or len(test_x) != n_test:
        raise UserError(
            f"CIFAR-10 folder {folder}: expected {n_train:,} training and {n_test:,} test images, "
            f"found {len(train_x):,} and {len(test_x):,}"
        )
    return CIFAR10(
        torch.from_numpy(train_x), torch.from_numpy(train_y),
        torch.from_numpy(test_x), torch.from_numpy(test_y),
        classes, str(folder),
    )


# ---------------------------------------------------------------------------------------------
# Download


def _extract_safely(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz, refusing absolute paths, '..', links and special files."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                target = (dest / m.name).resolve()
                if not (m.isfile() or m.isdir()):
                    raise UserError(f"archive {archive.name}: refusing special member {m.name!r}")
                if target != dest and dest not in target.parents:
                    raise UserError(f"archive {archive.name}: refusing path outside the target folder {m.name!r}")
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as e:
        raise UserError(f"archive {archive} is not a valid .tar.gz ({e})") from None


def download_cifar10(root: Path, url: str | None = None, md5: str | None = None) -> Path:
    """Download the official archive into `root`, check its md5, extract; return the batches folder."""
    root = Path(root)
    url, md5 = url or URL, md5 or MD5
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with download_progress(f"downloading {url.rsplit('/', 1)[-1]}", total) as advance:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(
                f"cannot download CIFAR-10 from {url} ({reason}); "
                f"download it elsewhere and pass --data-dir or set CIFAR10_DIR"
            ) from None
        if digest.hexdigest() != md5:
            raise UserError(f"download from {url} is corrupt: md5 {digest.hexdigest()} != expected {md5}")
        staging = Path(tmp) / "extracted"
        staging.mkdir()
        _extract_safely(archive, staging)
        if not (staging / FOLDER).is_dir():
            raise UserError(f"archive from {url} has no {FOLDER}/ folder")
        shutil.rmtree(root / FOLDER, ignore_errors=True)
        os.replace(staging / FOLDER, root / FOLDER)
    return root / FOLDER


# ---------------------------------------------------------------------------------------------
# Locating, caching, loading


def locate(data_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> Path:
    """The batches folder to read: the user's folder if given, else the cache (downloaded if needed)."""
    data_dir = data_dir or os.environ.get("CIFAR10_DIR") or None
    if data_dir:
        p = Path(data_dir).expanduser()
        if (p / FOLDER).is_dir():
            p = p / FOLDER
        if not p.is_dir():
            raise UserError(f"CIFAR-10 folder not found: {p} (from --data-dir / CIFAR10_DIR)")
        return p
    p = cache_dir / FOLDER
    if not (p / META_FILE).is_file():
        if not download:
            raise UserError(f"CIFAR-10 is not in {p}; run `cifar10cnn data` or pass --data-dir")
        with file_lock(cache_dir / ".download.lock"):  # a second process waits, then finds it there
            if not (p / META_FILE).is_file():
                download_cifar10(cache_dir)
    return p


def _cache_key(folder: Path) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{folder.resolve()}".encode())
    for name in [*TRAIN_FILES, TEST_FILE, META_FILE]:
        st = (folder / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def load_cifar10(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> CIFAR10:
    """Load CIFAR-10 (validated) from the uint8 cache, parsing the batch files on first use."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = locate(data_dir, cache)
    try:
        key_dir = cache / "arrays" / _cache_key(folder)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve)
        key_dir = None  # incomplete or unreadable folder: read_batches below names what is wrong
    names = ["train_x", "train_y", "test_x", "test_y"]
    cached = key_dir is not None and (key_dir / "classes.txt").is_file()
    if cached and all((key_dir / f"{n}.npy").is_file() for n in names):
        try:
            arrays = [torch.from_numpy(np.load(key_dir / f"{n}.npy", allow_pickle=False)) for n in names]
            classes = (key_dir / "classes.txt").read_text().split("\n")[:N_CLASSES]
            if arrays[0].shape == (N_TRAIN, 32, 32, 3) and arrays[2].shape == (N_TEST, 32, 32, 3):
                return CIFAR10(*arrays, classes, str(folder))
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    data = read_batches(folder)
    if key_dir is not None:
        try:
            with file_lock(key_dir.parent / f".{key_dir.name}.lock"):  # one writer; each file atomic
                for n in names:
                    _save_npy(key_dir / f"{n}.npy", getattr(data, n).numpy())
                atomic_write(key_dir / "classes.txt", lambda tmp: Path(tmp).write_text("\n".join(data.classes)))
        except OSError:
            pass  # caching is an optimisation; a read-only cache folder must not stop training
    return data


def make_split(labels: torch.Tensor, val_size: int = 5_000, seed: int = 0, subset: int | None = None) -> Split:
    """Stratified train/validation split of the training set, fixed by `seed`.

    Each class gives ``val_size / 10`` validation images. ``subset`` keeps a stratified
    slice of that many training images (for quick runs); the validation part is unchanged.
    """
    n_classes = int(labels.max()) + 1
    if val_size < 0 or val_size % n_classes:
        raise UserError(f"--val-size must be a non-negative multiple of {n_classes}, got {val_size}")
    per_class_val = val_size // n_classes
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    train_parts, val_parts = [], []
    for c in range(n_classes):
        idx = perm[labels[perm] == c]
        if len(idx) <= per_class_val:
            raise UserError(f"--val-size {val_size} leaves no training images of class {c}")
        val_parts.append(idx[:per_class_val])
        train_parts.append(idx[per_class_val:])
    train_idx = torch.cat(train_parts)
    if subset is not None:
        if subset < n_classes or subset > len(train_idx):
            raise UserError(f"--subset must be between {n_classes} and {len(train_idx):,}, got {subset}")
        # interleave classes so any prefix stays stratified, then cut
        stacked = torch.stack([p[: min(len(q) for q in train_parts)] for p in train_parts], dim=1).flatten()
        train_idx = stacked[:subset]
    return Split(train_idx.sort().values, torch.cat(val_parts).sort().values, seed)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (on the 0–1 scale) of N×32×32×3 uint8 images."""
    x = images.reshape(-1, 3).double() / 255.0
    return x.mean(0).tolist(), x.std(0).tolist()

