"""CIFAR-10 and CIFAR-100 on disk → one uint8 tensor per split, validated and cached.

Where the data comes from, in order:
  1. ``--data-dir`` (or the ``CIFAR10_DIR`` / ``CIFAR100_DIR`` environment variable): the
     ``cifar-10-batches-py`` / ``cifar-100-python`` folder itself or a folder that contains it. It is
     only read, never written (it may be read-only).
  2. otherwise ``<cache>/cifar-10-batches-py`` (``cifar-100-python``), downloaded from the official URL
     when missing (progress bar, md5 check, extraction that refuses paths leaving the target folder).

CIFAR-100 has 100 fine classes and 20 coarse ones (``--dataset cifar100:coarse``); both come from the
same archive.

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
from .dataset import ImageDataset

CACHE_VERSION = 2


@dataclass
class Archive:
    """One of the official CIFAR python archives: where it comes from and what it must hold."""

    title: str  # as messages name it
    url: str
    md5: str
    folder: str  # the folder the archive extracts to
    train_files: list[str]
    test_file: str
    meta_file: str
    names_key: str  # the class names in the meta file
    labels_key: str  # the labels in the batch files
    n_train: int
    n_test: int
    n_classes: int
    env: str  # the environment variable that may name the folder
    max_file_bytes: int  # a larger file is refused before unpickling (CIFAR-10's batches are ~31 MB)


_C100 = dict(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
             folder="cifar-100-python", train_files=["train"], test_file="test", meta_file="meta", n_train=50_000,
             n_test=10_000, env="CIFAR100_DIR", max_file_bytes=256 * 2**20)
ARCHIVES = {
    "cifar10": Archive("CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                       [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "label_names", "labels",
                       50_000, 10_000, 10, "CIFAR10_DIR", 64 * 2**20),
    "cifar100": Archive("CIFAR-100", **_C100, names_key="fine_label_names", labels_key="fine_labels", n_classes=100),
    "cifar100:coarse": Archive("CIFAR-100 (coarse)", **_C100, names_key="coarse_label_names",
                               labels_key="coarse_labels", n_classes=20),
}
CIFAR10 = ARCHIVES["cifar10"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIFAR10CNN_CACHE") or Path.home() / ".cache" / "cifar10cnn")


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


def _read_pickle(path: Path, archive: Archive = CIFAR10) -> dict:
    title = archive.title
    try:
        size = path.stat().st_size
        if size > archive.max_file_bytes:
            raise UserError(f"{title} file {path} is {size:,} bytes; more than any file of the official archive")
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise UserError(f"{title} file missing: {path}") from None
    except UserError:
        raise
    except Exception as e:  # any parse failure means a corrupt or foreign file
        raise UserError(f"{title} file {path} is corrupt or not a CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{title} file {path} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, archive: Archive = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    d, title, key = _read_pickle(path, archive), archive.title, archive.labels_key
    if "data" not in d or key not in d:
        raise UserError(f"{title} file {path} lacks 'data' or '{key}'")
    data = np.asarray(d["data"])
    try:
        labels = np.asarray(d[key])
    except (ValueError, TypeError) as e:
        raise UserError(f"{title} file {path}: labels are not a list of integers ({e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{title} file {path}: images must be uint8 rows of 3072 values, "
                        f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserError(f"{title} file {path}: labels must be a list of integers, got {labels.dtype} "
                        f"{'scalar' if labels.ndim == 0 else labels.shape}")
    if labels.shape != (data.shape[0],):
        raise UserError(f"{title} file {path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= archive.n_classes):
        raise UserError(f"{title} file {path}: labels must be 0–{archive.n_classes - 1}, found "
                        f"{labels.min()}..{labels.max()}")
    # rows are 1024 R, 1024 G, 1024 B values of a row-major 32×32 image → N×32×32×3
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_batches(folder: Path, archive: Archive = CIFAR10) -> ImageDataset:
    """Parse and validate the official layout (the training batches, the test batch, the meta file)."""
    folder, a = Path(folder), archive
    missing = [f for f in [*a.train_files, a.test_file, a.meta_file] if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{a.title} folder {folder} is incomplete: missing {', '.join(missing)}")
    meta = _read_pickle(folder / a.meta_file, a)
    names = meta.get(a.names_key)
    if not isinstance(names, list) or len(names) != a.n_classes:
        raise UserError(f"{folder / a.meta_file}: expected {a.n_classes} {a.names_key}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    parts = [_read_batch(folder / f, a) for f in a.train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / a.test_file, a)
    if len(train_x) != a.n_train or len(test_x) != a.n_test:
        raise UserError(
            f"{a.title} folder {folder}: expected {a.n_train:,} training and {a.n_test:,} test images, "
            f"found {len(train_x):,} and {len(test_x):,}"
        )
    return ImageDataset(
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


def download(archive: Archive, root: Path, url: str | None = None, md5: str | None = None) -> Path:
    """Download the official archive into `root`, check its md5, extract; return the batches folder."""
    root, a = Path(root), archive
    url, md5 = url or a.url, md5 or a.md5
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        tgz = Path(tmp) / url.rsplit("/", 1)[-1]
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tgz, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with download_progress(f"downloading {url.rsplit('/', 1)[-1]}", total) as advance:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(
                f"cannot download {a.title} from {url} ({reason}); "
                f"download it elsewhere and pass --data-dir or set {a.env}"
            ) from None
        if digest.hexdigest() != md5:
            raise UserError(f"download from {url} is corrupt: md5 {digest.hexdigest()} != expected {md5}")
        staging = Path(tmp) / "extracted"
        staging.mkdir()
        _extract_safely(tgz, staging)
        if not (staging / a.folder).is_dir():
            raise UserError(f"archive from {url} has no {a.folder}/ folder")
        shutil.rmtree(root / a.folder, ignore_errors=True)
        os.replace(staging / a.folder, root / a.folder)
    return root / a.folder


def download_cifar10(root: Path, url: str | None = None, md5: str | None = None) -> Path:
    return download(CIFAR10, root, url, md5)


# ---------------------------------------------------------------------------------------------
# Locating, caching, loading


def locate(data_dir: str | os.PathLike | None, cache_dir: Path, download_missing: bool = True,
           archive: Archive = CIFAR10) -> Path:
    """The batches folder to read: the user's folder if given, else the cache (downloaded if needed)."""
    a = archive
    data_dir = data_dir or os.environ.get(a.env) or None
    if data_dir:
        p = Path(data_dir).expanduser()
        if (p / a.folder).is_dir():
            p = p / a.folder
        if not p.is_dir():
            raise UserError(f"{a.title} folder not found: {p} (from --data-dir / {a.env})")
        return p
    p = cache_dir / a.folder
    if not (p / a.meta_file).is_file():
        if not download_missing:
            raise UserError(f"{a.title} is not in {p}; run `cifar10cnn data` or pass --data-dir")
        with file_lock(cache_dir / ".download.lock"):  # a second process waits, then finds it there
            if not (p / a.meta_file).is_file():
                download(a, cache_dir)
    return p


def _cache_key(folder: Path, name: str, archive: Archive) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{name}:{folder.resolve()}".encode())
    for file in [*archive.train_files, archive.test_file, archive.meta_file]:
        st = (folder / file).stat()
        h.update(f"{file}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def load_cifar(name: str = "cifar10", data_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 (`name`: a key of ARCHIVES, validated) from the uint8 cache, parsing the
    batch files on first use."""
    a = ARCHIVES[name]
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = locate(data_dir, cache, archive=a)
    try:
        key_dir = cache / "arrays" / _cache_key(folder, name, a)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve)
        key_dir = None  # incomplete or unreadable folder: read_batches below names what is wrong
    names = ["train_x", "train_y", "test_x", "test_y"]
    cached = key_dir is not None and (key_dir / "classes.txt").is_file()
    if cached and all((key_dir / f"{n}.npy").is_file() for n in names):
        try:
            arrays = [torch.from_numpy(np.load(key_dir / f"{n}.npy", allow_pickle=False)) for n in names]
            classes = (key_dir / "classes.txt").read_text().split("\n")[:a.n_classes]
            if arrays[0].shape == (a.n_train, 32, 32, 3) and arrays[2].shape == (a.n_test, 32, 32, 3):
                return ImageDataset(*arrays, classes, str(folder))
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    data = read_batches(folder, a)
    if key_dir is not None:
        try:
            with file_lock(key_dir.parent / f".{key_dir.name}.lock"):  # one writer; each file atomic
                for n in names:
                    save_npy(key_dir / f"{n}.npy", getattr(data, n).numpy())
                atomic_write(key_dir / "classes.txt", lambda tmp: Path(tmp).write_text("\n".join(data.classes)))
        except OSError:
            pass  # caching is an optimisation; a read-only cache folder must not stop training
    return data


def load_cifar10(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
                 ) -> ImageDataset:
    """CIFAR-10 (the scripts' and tests' shorthand for load_dataset("cifar10", ...))."""
    return load_cifar("cifar10", data_dir, cache_dir)
