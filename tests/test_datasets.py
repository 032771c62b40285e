"""Data sets other than CIFAR-10: CIFAR-100 from a built archive, and folders of the user's own images —
a real one (scikit-learn's digits, 1,797 8×8 grey images) written as PNG class folders, a mixed one (sizes,
formats, modes), and every bad folder a user can make (one line, exit 2, nothing written)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar10cnn.data import cifar
from cifar10cnn.data.dataset import allocate, canonical_name, make_split
from cifar10cnn.data.folder import FolderLimits, decode_folder, load_folder, scan_folder
from cifar10cnn.data.loading import load_dataset
from cifar10cnn.errors import UserError
from cifar10cnn.evaluation.metrics import classification_metrics

from .conftest import cli

DIGITS = [str(d) for d in range(10)]


# --- CIFAR-100 ---------------------------------------------------------------------------------------


def _write_fake_cifar100(folder: Path, n_train: int = 600, n_test: int = 200) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine,
                         b"coarse_labels": [c // 5 for c in fine], b"filenames": [b"x.png"] * n,
                         b"batch_label": name.encode()}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, f, protocol=2)
    return folder


@pytest.fixture
def cifar100_archive(tmp_path, monkeypatch):
    """A small archive in the official CIFAR-100 layout, served by URL, with its md5 in place of the real one."""
    src = _write_fake_cifar100(tmp_path / "src" / "cifar-100-python")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-100-python")
    path = tmp_path / "cifar-100-python.tar.gz"
    path.write_bytes(buf.getvalue())
    for name in ("cifar100", "cifar100:coarse"):
        a = cifar.ARCHIVES[name]
        assert a.md5 == "eb9058c3a382ffc7106e4002c42a8d85"  # what real users download is checked against this
        monkeypatch.setattr(a, "url", path.as_uri())
        monkeypatch.setattr(a, "md5", hashlib.md5(buf.getvalue()).hexdigest())
        monkeypatch.setattr(a, "n_train", 600)
        monkeypatch.setattr(a, "n_test", 200)
    monkeypatch.delenv("CIFAR100_DIR", raising=False)
    return path


def test_cifar100_downloads_checks_md5_and_reads_fine_and_coarse_labels(cifar100_archive, tmp_path):
    fine = load_dataset("cifar100", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "cifar-100-python" / "meta").is_file()
    assert fine.train_x.shape == (600, 32, 32, 3) and fine.test_x.shape == (200, 32, 32, 3)
    assert len(fine.classes) == 100 and fine.classes[7] == "fine7" and int(fine.train_y.max()) == 99
    coarse = load_dataset("cifar100:coarse", cache_dir=tmp_path / "cache")
    assert len(coarse.classes) == 20 and torch.equal(coarse.train_y, fine.train_y // 5)
    assert torch.equal(coarse.train_x, fine.train_x)
    again = load_dataset("cifar100", cache_dir=tmp_path / "cache")  # from the uint8 cache
    assert torch.equal(again.train_y, fine.train_y) and again.classes == fine.classes


def test_cifar100_with_a_wrong_md5_is_refused(cifar100_archive, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar.ARCHIVES["cifar100"], "md5", "0" * 32)
    with pytest.raises(UserError, match="corrupt: md5"):
        load_dataset("cifar100", cache_dir=tmp_path / "cache")


def test_cifar100_trains_and_evaluates_with_its_100_classes(cifar100_archive, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", "--dataset", "cifar100", "--cache-dir", tmp_path / "cache", "--epochs", "1",
               "--val-size", "100", "--batch-size", "50", "--out", out) == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["dataset"] == "cifar100" and len(doc["data"]["classes"]) == 100
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_class_accuracy"]) == 100 and metrics["test_images"] == 200


# --- the split -----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=2, max_size=12), st.integers(0, 10_000))
def test_allocation_is_proportional_and_exact(counts, total):
    total = total % (sum(counts) + 1)
    share = allocate(counts, total)
    assert sum(share) == total and all(0 <= s <= c for s, c in zip(share, counts, strict=True))
    assert all(abs(s - total * c / sum(counts)) < 1 for s, c in zip(share, counts, strict=True))


def test_imbalanced_split_is_stratified_and_a_given_validation_set_is_kept():
    labels = torch.tensor([0] * 800 + [1] * 150 + [2] * 50)
    s = make_split(labels, seed=3)  # default: a tenth
    assert labels[s.val_idx].bincount().tolist() == [80, 15, 5]
    assert not set(s.val_idx.tolist()) & set(s.train_idx.tolist())
    given_val = torch.arange(900, 1000)
    g = make_split(labels, None, 0, given_val=given_val)
    assert g.given and torch.equal(g.val_idx, given_val) and len(g.train_idx) == 900
    with pytest.raises(UserError, match="val/ folder is the validation set"):
        make_split(labels, 50, 0, given_val=given_val)
    assert len(make_split(labels, 0, 0, given_val=given_val).train_idx) == 1000  # --final trains on val/ too


def test_balanced_accuracy_only_when_classes_are_imbalanced():
    labels = torch.tensor([0] * 90 + [1] * 10)
    logits = torch.zeros(100, 2)
    logits[:, 0] = 1  # always class 0: 90% accurate, 50% balanced
    m = classification_metrics(logits, labels, ["a", "b"])
    assert m["test_accuracy"] == pytest.approx(0.9) and m["test_balanced_accuracy"] == pytest.approx(0.5)
    assert "test_balanced_accuracy" not in classification_metrics(logits[:20], torch.tensor([0, 1] * 10), ["a", "b"])


def test_dataset_names():
    assert canonical_name("cifar100:coarse") == "cifar100:coarse"
    assert canonical_name("folder:rel/x") == "folder:" + os.path.abspath("rel/x")
    for bad in ("cifar1000", "folder:", "imagenet"):
        with pytest.raises(UserError, match="unknown --dataset"):
            canonical_name(bad)


# --- a real folder: the digits ------------------------------------------------------------------------


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 255 / 16).astype(np.uint8), d.target


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    images, target = _digits()
    for i, (img, y) in enumerate(zip(images, target, strict=True)):
        (root / str(y)).mkdir(exist_ok=True)
        Image.fromarray(img, "L").save(root / str(y) / f"{i:04d}.png")
    return root


def test_digits_folder_loads_splits_and_caches_per_file(digits_dir, tmp_path):
    data = load_folder(digits_dir, tmp_path / "cache")
    assert data.classes == DIGITS and data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (32, 32, 3)
    assert len(data.train_y) + len(data.test_y) == 1797
    assert len(data.test_y) == round(0.2 * 1797) and sorted(set(data.test_y.tolist())) == list(range(10))
    first = load_folder(digits_dir, tmp_path / "cache")  # the same split, from the cache
    assert torch.equal(first.test_x, data.test_x) and torch.equal(first.train_y, data.train_y)
    scan = scan_folder(digits_dir)
    assert decode_folder(scan, tmp_path / "cache").decoded_now == 0
    changed = digits_dir / "3" / sorted(os.listdir(digits_dir / "3"))[0]
    Image.fromarray(np.full((8, 8), 255, np.uint8), "L").save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime whatever the clock
    dec = decode_folder(scan_folder(digits_dir), tmp_path / "cache")
    assert dec.decoded_now == 1  # only the changed file is read again
    row = [e.rel for e in scan.entries].index(changed.relative_to(digits_dir).as_posix())
    assert (dec.images[row] == 255).all()


def test_digits_train_predict_report_and_serve_with_digit_names(digits_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", "--dataset", f"folder:{digits_dir}", "--epochs", "3", "--batch-size", "64", "--out", out,
               "--cache-dir", tmp_path / "cache", "--report") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["per_class_accuracy"]) == DIGITS and metrics["test_accuracy"] > 0.5
    assert "balanced accuracy" in (out / "report.html").read_text()
    capsys.readouterr()
    assert cli("predict", out, digits_dir / "7", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) > 150 and all(r["top_k"][0]["class"] in DIGITS for r in rows)
    assert sum(r["top_k"][0]["class"] == "7" for r in rows) > len(rows) / 2

    from fastapi.testclient import TestClient

    from cifar10cnn.serving.app import create_app

    with TestClient(create_app(out, backend="torch"), base_url="http://localhost") as c:
        assert c.get("/v1/model").json()["classes"] == DIGITS
        png = (digits_dir / "7" / sorted(os.listdir(digits_dir / "7"))[0]).read_bytes()
        answer = c.post("/v1/predict", content=png, headers={"Content-Type": "image/png"}).json()
        assert answer["predictions"][0]["top_k"][0]["class"] in DIGITS


def test_mixed_sizes_formats_and_modes_train_without_a_special_case(tmp_path):
    """The digits again, as a user's photos would come: random sizes (not square), JPEG/PNG/BMP/WebP, grey,
    RGB, RGBA, 16-bit; in train/ val/ test/ trees with sub-subfolders."""
    images, target = _digits()
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    for i, (img, y) in enumerate(zip(images[:600], target[:600], strict=True)):
        split = ["train", "train", "train", "val", "test"][i % 5]
        w, h = int(rng.integers(8, 300)), int(rng.integers(8, 300))
        pic = Image.fromarray(img, "L").resize((w, h))
        kind = i % 5
        if kind == 1:
            pic = pic.convert("RGB")
        elif kind == 2:
            pic = pic.convert("RGBA")
        elif kind == 3:
            pic = Image.fromarray(np.asarray(pic).astype(np.uint16) * 257)  # 16-bit grey
        folder = root / split / str(y) / ("sub" if i % 7 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        fmt = ["jpg", "png", "png", "png", "webp" if i % 2 else "bmp"][kind]
        pic.save(folder / f"{i}.{fmt}")
    data = load_folder(root, tmp_path / "cache")
    assert len(data.train_y) == 480 and data.val_idx is not None and len(data.val_idx) == 120
    assert len(data.test_y) == 120 and data.classes == DIGITS
    out = tmp_path / "run"
    assert cli("train", "--dataset", f"folder:{root}", "--epochs", "2", "--batch-size", "32", "--out", out,
               "--cache-dir", tmp_path / "cache") == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["data"]["val_images"] == 120 and doc["data"]["validation"] == "the data set's own"
    assert doc["data"]["folder"]["test_from"] == "the test/ folder"


def test_data_command_lists_counts_sizes_unreadable_duplicates_and_skipped(digits_dir, tmp_path, capsys):
    root = tmp_path / "tree"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
    for i in range(60):
        Image.new("RGB", (40 + i, 40), (i, 0, 0)).save(root / "train" / "ab"[i % 2] / f"{i}.png")
    for i in range(10):
        Image.new("RGB", (20, 20), (0, i, 0)).save(root / "test" / "ab"[i % 2] / f"{i}.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "test" / "a" / "copy.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    assert cli("data", "--dataset", f"folder:{root}", "--cache-dir", tmp_path / "c", "--max-unreadable", "0.05") == 0
    text = capsys.readouterr().out
    assert "broken.png" in text and "notes.txt" in text and "1 across train/val/test" in text
    assert cli("data", "--dataset", f"folder:{root}", "--cache-dir", tmp_path / "c", "--json",
               "--max-unreadable", "0.05") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"train": [30, 30], "test": [6, 5]}
    assert list(doc["unreadable"]) == ["train/b/broken.png"] and doc["duplicates"]["across_splits"] == 1
    assert doc["sizes"]["≤32"] == 10 and doc["sizes"]["33–64"] == 61
    # 1 unreadable of 72 is more than the default 1%: refused in one line that says how to accept it
    assert cli("data", "--dataset", f"folder:{root}", "--cache-dir", tmp_path / "c") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be decoded" in err and "--max-unreadable" in err and "\n" not in err


# --- bad folders: one line, exit 2, nothing written ----------------------------------------------------


def _classes(root: Path, names: list[str], per_class: int = 3) -> Path:
    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(root / n / f"{i}.png")
    return root


def _loop(root: Path) -> Path:
    _classes(root, ["a", "b"])
    os.symlink(root, root / "a" / "back")  # a/back → the root: walking follows it in circles
    return root


def _bomb(root: Path) -> Path:
    _classes(root, ["a", "b"])
    Image.new("1", (20_000, 20_000)).save(root / "a" / "huge.png")  # 400 M pixels, a few kB on disk
    return root


def _tree_mismatch(root: Path) -> Path:
    _classes(root / "train", ["a", "b"])
    _classes(root / "test", ["a", "c"])
    return root


BAD_FOLDERS = [
    (lambda r: r / "missing", "not found"),
    (lambda r: (r.mkdir(), r)[1], "no class folders"),
    (lambda r: _classes(r, ["only"]), "one class folder"),
    (lambda r: (_classes(r, ["a", "b"]), (r / "c").mkdir(), r)[2], "class folder c has no images"),
    (lambda r: _classes(r, ["a", "chat noir"]), "has a space or a character"),
    (lambda r: _classes(r, ["a", "café"]), "has a space or a character"),
    (lambda r: (_classes(r, ["a", "b"]), [(r / "a" / f"{i}.txt").write_text("x") for i in range(3)],
                [(r / "b" / f"{i}.png").write_bytes(b"not png") for i in range(3)], r)[3], "cannot be decoded"),
    (_tree_mismatch, "different classes (only in test/: c; missing in test/: b)"),
    (_bomb, "cannot be decoded"),
    (_loop, "symlink loop"),
]


@pytest.mark.parametrize("make, message", BAD_FOLDERS)
def test_bad_folders_give_one_line_and_write_nothing(make, message, tmp_path, capsys):
    root = make(tmp_path / "data")
    out = tmp_path / "run"
    assert cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--out", out,
               "--cache-dir", tmp_path / "cache") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_a_decompression_bomb_is_listed_not_decoded(tmp_path):
    root = _bomb(tmp_path / "data")
    data = load_folder(root, tmp_path / "cache", FolderLimits(max_unreadable=0.5))
    assert len(data.train_y) + len(data.test_y) == 6
    assert "too large" in data.about["unreadable"]["a/huge.png"]


def test_memory_is_estimated_before_decoding(digits_dir, tmp_path):
    with pytest.raises(UserError, match=r"need .* GiB of memory .* raise it with --data-memory"):
        load_folder(digits_dir, tmp_path / "cache", FolderLimits(max_memory_gib=0.001))
    assert not (tmp_path / "cache" / "folders").exists() or not any((tmp_path / "cache" / "folders").rglob("*.npy"))


# --- --image-size ----------------------------------------------------------------------------------------


def test_image_size_flows_to_training_predict_serve_and_export(digits_dir, tmp_path, capsys):
    out = tmp_path / "run48"
    assert cli("train", "--dataset", f"folder:{digits_dir}", "--model", "resnet20", "--image-size", "48", "--epochs",
               "1", "--batch-size", "64", "--subset", "400", "--out", out, "--cache-dir", tmp_path / "cache") == 0
    from cifar10cnn.runs import load_run_model

    _, meta, _ = load_run_model(out)
    assert meta["image_size"] == 48
    assert json.loads((out / "config.json").read_text())["config"]["image_size"] == 48
    capsys.readouterr()
    assert cli("predict", out, digits_dir / "4", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(r["top_k"][0]["class"] in DIGITS for r in rows)

    from fastapi.testclient import TestClient

    from cifar10cnn.serving.app import create_app

    with TestClient(create_app(out, backend="torch"), base_url="http://localhost") as c:
        card = c.get("/v1/model").json()
        assert card["input"]["height"] == card["input"]["width"] == 48
        png = (digits_dir / "4" / sorted(os.listdir(digits_dir / "4"))[0]).read_bytes()
        assert c.post("/v1/predict", content=png, headers={"Content-Type": "image/png"}).status_code == 200
    assert cli("export", out, "--cache-dir", tmp_path / "cache", "--check-images", "16") == 0
    import onnxruntime as ort

    shape = ort.InferenceSession(str(out / "model.onnx")).get_inputs()[0].shape
    assert shape[1:] == [3, 48, 48]


@pytest.mark.parametrize("flags, message", [
    (["--model", "seed", "--image-size", "64"], "cannot take 64×64 images"),
    (["--dataset", "cifar10", "--image-size", "64"], "CIFAR images are 32×32"),
    (["--image-size", "4"], "from 8 to 512"),
])
def test_image_size_refusals(flags, message, digits_dir, tmp_path, capsys):
    args = ["train", "--dataset", f"folder:{digits_dir}", "--epochs", "1", *flags, "--out", tmp_path / "run",
            "--cache-dir", tmp_path / "cache"]
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run" / "model.safetensors").exists()
