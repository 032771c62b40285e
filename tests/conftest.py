"""Shared fixtures: the real CIFAR-10 (from CIFAR10_DIR) and small fake data sets in the official layout."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from cifar10cnn.data import cifar
from cifar10cnn.training.hooks import Hook

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never write to the user's ~/.cache: every test shares one throw-away cache."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CIFAR10CNN_CACHE")
    os.environ["CIFAR10CNN_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("CIFAR10CNN_CACHE", None)
    else:
        os.environ["CIFAR10CNN_CACHE"] = old


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    d = os.environ.get("CIFAR10_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("set CIFAR10_DIR to the cifar-10-batches-py folder to run tests on real CIFAR-10")
    return Path(d)


@pytest.fixture(scope="session")
def data(cifar_dir):
    return cifar.load_cifar10(cifar_dir)


def write_fake_cifar(folder: Path, per_batch: int = 1200, n_test: int = 1000, seed: int = 0) -> Path:
    """A small data set in the official pickle layout (balanced labels, random pixels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, name: str) -> None:
        labels = [i % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)

    for i in range(1, 6):
        batch(per_batch, f"data_batch_{i}")
    batch(n_test, "test_batch")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": per_batch}, f, protocol=2)
    return folder


@pytest.fixture
def fake_sizes(monkeypatch):
    """Make the loader expect the fake data set's sizes (5×1200 train, 1000 test)."""
    monkeypatch.setattr(cifar.CIFAR10, "n_train", 6000)
    monkeypatch.setattr(cifar.CIFAR10, "n_test", 1000)


@pytest.fixture
def fake_dir(tmp_path, fake_sizes) -> Path:
    return write_fake_cifar(tmp_path / "cifar-10-batches-py")


class StopAfter(Hook):
    """A hook that raises `exc` after epoch `epoch`, as Ctrl-C or a tuning pruner would: the run stays resumable."""

    def __init__(self, epoch: int, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.epoch, self.exc = epoch, exc

    def on_epoch_end(self, run, row: dict) -> None:
        if row["epoch"] == self.epoch:
            raise self.exc


QUICK = ["--subset", "500", "--val-size", "200", "--batch-size", "50"]  # a run of seconds, on real images


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, cifar_dir) -> Path:
    """One finished 2-epoch run shared by the tests that only read a run folder."""
    out = tmp_path_factory.mktemp("runs") / "quick"
    assert cli("train", *QUICK, "--epochs", "2", "--out", out) == 0
    return out


def cli(*args: str) -> int:
    """Run the CLI in-process; returns its exit status."""
    from cifar10cnn.cli import main

    return main([str(a) for a in args])




def free_port() -> int:
    """A loopback port nothing listens on (for the tests that start a real server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
