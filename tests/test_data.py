import hashlib
import io
import os
import pickle
import socket
import tarfile

import numpy as np
import pytest
import torch

from cifar10cnn.data import cifar
from cifar10cnn.data.cifar import download_cifar10, load_cifar10, read_batches
from cifar10cnn.data.dataset import make_split
from cifar10cnn.errors import UserError

from .conftest import CLASSES, cli, write_fake_cifar

# --- the real data set -------------------------------------------------------------------------


def test_real_cifar10_loads_and_validates(data):
    assert data.train_x.shape == (50_000, 32, 32, 3) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (10_000, 32, 32, 3)
    assert data.train_y.dtype == torch.int64 and int(data.train_y.min()) == 0 and int(data.train_y.max()) == 9
    assert data.classes == CLASSES
    assert data.train_y.bincount().tolist() == [5000] * 10
    assert data.test_y.bincount().tolist() == [1000] * 10
    mean = (data.train_x.reshape(-1, 3).double() / 255).mean(0)
    torch.testing.assert_close(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.double), atol=1e-4, rtol=0)


def test_cache_reload_is_identical_and_not_in_the_data_folder(cifar_dir, data, _private_cache):
    before = sorted(os.listdir(cifar_dir))
    again = load_cifar10(cifar_dir)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    assert sorted(os.listdir(cifar_dir)) == before
    assert list((_private_cache / "arrays").glob("*/train_x.npy"))


def test_parent_folder_is_accepted(cifar_dir):
    assert cifar.locate(cifar_dir.parent, cache_dir=cifar_dir) == cifar_dir


# --- validation on small fake data sets ------------------------------------------------------


def test_fake_folder_reads(fake_dir):
    d = read_batches(fake_dir)
    assert d.train_x.shape == (6000, 32, 32, 3) and d.classes == CLASSES
    # row layout: 1024 R, 1024 G, 1024 B values, row-major
    with open(fake_dir / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert d.train_x[0, 0, 1, 0] == raw[0, 1] and d.train_x[0, 0, 0, 2] == raw[0, 2048]


def test_read_only_data_folder_works_and_stays_untouched(fake_dir, tmp_path):
    os.chmod(fake_dir, 0o555)
    try:
        d = load_cifar10(fake_dir, cache_dir=tmp_path / "c")
        assert len(d.train_y) == 6000
        assert load_cifar10(fake_dir, cache_dir=tmp_path / "c").train_x.shape == (6000, 32, 32, 3)  # from cache
    finally:
        os.chmod(fake_dir, 0o755)


def _rewrite(folder, name, changes: dict):
    with open(folder / name, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d.update(changes)
    with open(folder / name, "wb") as f:
        pickle.dump(d, f, protocol=2)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "data_batch_3").unlink(), "missing data_batch_3"),
        (lambda d: (d / "test_batch").write_bytes(b"\x80\x02garbage"), "corrupt"),
        (lambda d: _rewrite(d, "data_batch_1", {b"labels": [10] * 1200}), "labels must be 0–9"),
        (lambda d: _rewrite(d, "data_batch_2", {b"data": np.zeros((1200, 3072), np.float32)}), "uint8"),
        (lambda d: _rewrite(d, "data_batch_2", {b"data": np.zeros((1100, 3072), np.uint8)}), "labels for"),
        (lambda d: _rewrite(d, "test_batch", {b"data": np.zeros((10, 3072), np.uint8),
                                               b"labels": [0] * 10}), "expected 6,000 training and 1,000 test"),
    ],
)
def test_damaged_folders_give_one_clear_error(fake_dir, damage, message):
    damage(fake_dir)
    with pytest.raises(UserError, match=message):
        read_batches(fake_dir)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/cifar10cnn-pwned",))


def test_batch_files_are_never_fully_unpickled(fake_dir):
    with open(fake_dir / "data_batch_4", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(UserError, match="refusing to load global"):
        read_batches(fake_dir)
    assert not os.path.exists("/tmp/cifar10cnn-pwned")


def test_missing_data_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_cifar10(tmp_path / "nowhere", cache_dir=tmp_path)


# --- split ----------------------------------------------------------------------------------


def test_split_is_stratified_disjoint_and_seeded(data):
    s = make_split(data.train_y, 5000, seed=0)
    assert len(s.train_idx) == 45_000 and len(s.val_idx) == 5_000
    assert data.train_y[s.val_idx].bincount().tolist() == [500] * 10
    assert data.train_y[s.train_idx].bincount().tolist() == [4500] * 10
    assert len(set(s.train_idx.tolist()) | set(s.val_idx.tolist())) == 50_000
    assert torch.equal(make_split(data.train_y, 5000, seed=0).val_idx, s.val_idx)
    assert not torch.equal(make_split(data.train_y, 5000, seed=1).val_idx, s.val_idx)


def test_subset_is_a_stratified_slice_of_the_training_split(data):
    full = make_split(data.train_y, 5000, seed=0)
    s = make_split(data.train_y, 5000, seed=0, subset=1000)
    assert data.train_y[s.train_idx].bincount().tolist() == [100] * 10
    assert set(s.train_idx.tolist()) <= set(full.train_idx.tolist())
    assert torch.equal(s.val_idx, full.val_idx)


@pytest.mark.parametrize("kwargs, message", [({"val_size": 1000}, "--val-size must be between"),
                                             ({"subset": 5}, "--subset"), ({"subset": 10**6}, "--subset")])
def test_bad_split_arguments(kwargs, message):
    labels = torch.arange(1000) % 10
    with pytest.raises(UserError, match=message):
        make_split(labels, **{"val_size": 100, **kwargs})


# --- download -------------------------------------------------------------------------------


def _archive(folder, extra_member=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
        if extra_member is not None:
            info = tarfile.TarInfo(extra_member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.fixture
def served_archive(tmp_path, fake_sizes):
    """A small archive in the official layout, reachable by URL (file://), and its md5."""
    blob = _archive(write_fake_cifar(tmp_path / "src" / "cifar-10-batches-py"))
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(blob)
    return path.as_uri(), hashlib.md5(blob).hexdigest()


def test_download_checks_md5_and_extracts(served_archive, tmp_path):
    url, md5 = served_archive
    folder = download_cifar10(tmp_path / "root", url, md5)
    assert folder == tmp_path / "root" / "cifar-10-batches-py"
    assert len(read_batches(folder).train_y) == 6000
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["cifar-10-batches-py"]  # no temp files left


def test_download_with_wrong_md5_is_refused_and_leaves_nothing(served_archive, tmp_path):
    url, _ = served_archive
    with pytest.raises(UserError, match="corrupt: md5"):
        download_cifar10(tmp_path / "root", url, "0" * 32)
    assert list((tmp_path / "root").iterdir()) == []


def test_download_without_network_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot download CIFAR-10"):
        download_cifar10(tmp_path, f"http://127.0.0.1:{port}/cifar-10-python.tar.gz", "0" * 32)


def test_archive_with_path_traversal_is_refused(tmp_path, fake_sizes):
    blob = _archive(write_fake_cifar(tmp_path / "src"), extra_member="../../escaped.txt")
    (tmp_path / "a.tar.gz").write_bytes(blob)
    with pytest.raises(UserError, match="outside the target folder"):
        download_cifar10(tmp_path / "root", (tmp_path / "a.tar.gz").as_uri(), hashlib.md5(blob).hexdigest())
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "root" / "escaped.txt").exists()


def test_data_command_downloads_into_the_cache_when_no_folder_is_given(served_archive, tmp_path, monkeypatch, capsys):
    url, md5 = served_archive
    monkeypatch.setattr(cifar.CIFAR10, "url", url)
    monkeypatch.setattr(cifar.CIFAR10, "md5", md5)
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    assert cli("data", "--cache-dir", tmp_path / "cache") == 0
    assert (tmp_path / "cache" / "cifar-10-batches-py" / "batches.meta").is_file()
    assert "6,000 images" in capsys.readouterr().out
    # the md5 that real users get is the official one
    assert cifar.CIFAR10.md5 == md5 and "c58f30108f718f92721af3b95e74349a" in open(cifar.__file__).read()


def test_data_command_reports_a_download_failure_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cifar.CIFAR10, "url", "http://127.0.0.1:9/none.tar.gz")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    assert cli("data", "--cache-dir", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot download CIFAR-10") and "\n" not in err
