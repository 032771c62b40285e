"""The bad-input corpus: every hostile or careless input gets one clear line (or one JSON error), never a
traceback, a hang or a memory blow-up — images, run folders, config files, data folders, flags and HTTP.

Each table row is one case; the inputs are generated (tests/hostile.py), small and fast. The slow server
cases (slow clients, header floods, a real socket) are one test with a bounded server at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10cnn.data.images import ImageError, decode_image

from .conftest import QUICK, cli, free_port
from .hostile import (
    encoded,
    exif_jpeg,
    flipped_byte,
    jpeg_with_size,
    picture,
    png_bytes,
    png_header_only,
    poison_weights,
    truncated,
    write_pickle,
)

# --- images -----------------------------------------------------------------------------------------

PNG = encoded(picture(), "PNG")
JPG = encoded(picture(), "JPEG", quality=90)
OK = "ok"
IMAGE_CASES = {
    # (bytes, expected: "ok" or the ImageError kind(s))
    "empty": (lambda: b"", {"empty"}),
    "one byte": (lambda: b"\x89", {"unsupported", "damaged"}),
    "random 100 bytes": (lambda: np.random.default_rng(1).bytes(100), {"unsupported"}),
    "random 20 KB": (lambda: np.random.default_rng(2).bytes(20_000), {"unsupported"}),
    "text": (lambda: b"hello, this is not an image\n" * 20, {"unsupported"}),
    "html": (lambda: b"<!doctype html><html><body><img src=x></body></html>", {"unsupported"}),
    "json": (lambda: b'{"image": [1, 2, 3]}', {"unsupported"}),
    "pdf header": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 500, {"unsupported"}),
    "gif": (lambda: encoded(picture(mode="P"), "GIF"), {"unsupported"}),
    "tiff": (lambda: encoded(picture(), "TIFF"), {"unsupported"}),
    "ico": (lambda: encoded(picture(32, 32), "ICO"), {"unsupported"}),
    "png signature only": (lambda: b"\x89PNG\r\n\x1a\n", {"damaged", "unsupported"}),
    "png header, no IDAT": (lambda: png_header_only(64, 64), {"unsupported"}),
    "png with an empty IDAT": (lambda: png_bytes(64, 64, rows=0), {"damaged"}),
    "png truncated 10%": (lambda: truncated(PNG, 0.1), {"damaged", "unsupported"}),
    "png truncated 50%": (lambda: truncated(PNG, 0.5), {"damaged"}),
    "png truncated 95%": (lambda: truncated(PNG, 0.95), {"damaged"}),
    "png rows missing": (lambda: png_bytes(64, 64, rows=10), {"damaged", OK}),  # Pillow may fill them
    "png corrupted header crc": (lambda: flipped_byte(PNG, 0.9 * 29 / len(PNG)), {"damaged", "unsupported"}),
    "png corrupted data": (lambda: flipped_byte(PNG, 0.5), {"damaged"}),
    "png zero width": (lambda: png_header_only(0, 64), {"damaged", "unsupported"}),
    "png 100000×100000 header": (lambda: png_bytes(100_000, 100_000, rows=0), {"too_large"}),
    "png 20000×20000": (lambda: png_bytes(20_000, 20_000, rows=1), {"too_large"}),
    "png 50 Mpx RGBA over the decode budget": (lambda: png_bytes(7_000, 7_000, color=6, rows=1), {"too_large"}),
    "jpeg truncated 10%": (lambda: truncated(JPG, 0.1), {"damaged", "unsupported"}),
    "jpeg truncated 60%": (lambda: truncated(JPG, 0.6), {"damaged"}),
    "jpeg claims 60000×60000": (lambda: jpeg_with_size(60_000, 60_000), {"too_large"}),
    "jpeg claims 7000×7000 with 16×16 data": (lambda: jpeg_with_size(7_000, 7_000), {"damaged", OK}),
    "bmp truncated": (lambda: truncated(encoded(picture(), "BMP"), 0.5), {"damaged"}),
    "webp truncated": (lambda: truncated(encoded(picture(), "WEBP"), 0.5), {"damaged", "unsupported"}),
    # hostile but valid: decoded, with memory bounded by the shape of the work, not by the pixels declared
    "png 1×150000 strip": (lambda: png_bytes(1, 150_000, color=0), OK),
    "png 150000×1 strip": (lambda: png_bytes(150_000, 1, color=0), OK),
    "png 16-bit gray 7000×7000": (lambda: png_bytes(7_000, 7_000, bits=16, color=0), OK),
    "png 16-bit RGB": (lambda: png_bytes(300, 200, bits=16, color=2), OK),
    "png 1×1": (lambda: encoded(picture(1, 1), "PNG"), OK),
    "png 2×3": (lambda: encoded(picture(2, 3), "PNG"), OK),
    "png palette with transparency": (lambda: encoded(picture(mode="P"), "PNG", transparency=0), OK),
    "png LA": (lambda: encoded(picture(mode="LA"), "PNG"), OK),
    "png 1-bit": (lambda: encoded(picture(mode="1"), "PNG"), OK),
    "jpeg CMYK": (lambda: encoded(picture(mode="CMYK"), "JPEG"), OK),
    "jpeg gray": (lambda: encoded(picture(mode="L"), "JPEG"), OK),
    "jpeg progressive": (lambda: encoded(picture(), "JPEG", progressive=True), OK),
    "jpeg 3000×2000 (decoded shrunk)": (lambda: encoded(picture(3000, 2000), "JPEG", quality=50), OK),
    "webp animated": (lambda: encoded(picture(), "WEBP", save_all=True, append_images=[picture(64, 48)]), OK),
    **{f"jpeg exif orientation {k}": ((lambda k=k: exif_jpeg(k)), OK) for k in range(1, 9)},
}


@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_image_case(name):
    make, expected = IMAGE_CASES[name]
    blob = make()
    if OK in expected:  # either way, but never a crash
        try:
            assert decode_image(blob).shape == (32, 32, 3)
        except ImageError as e:
            assert e.kind in expected
        return
    if expected == OK:
        out = decode_image(blob)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        return
    with pytest.raises(ImageError) as e:
        decode_image(blob)
    assert e.value.kind in expected, (e.value.kind, str(e.value))
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_exif_orientations_match_pillows_own_transpose():
    """Orientation is applied to the 32×32 result: the same picture as transposing the whole image first."""
    from PIL import ImageOps

    from cifar10cnn.data.images import fit_32

    for k in range(1, 9):
        blob = exif_jpeg(k)
        with Image.open(__import__("io").BytesIO(blob)) as img:
            reference = np.asarray(fit_32(ImageOps.exif_transpose(img).convert("RGB")), dtype=np.int16)
        assert np.abs(decode_image(blob).astype(np.int16) - reference).mean() < 6, k


def test_file_errors_are_reasons_not_crashes(tmp_path):
    folder = tmp_path / "a folder.png"
    folder.mkdir()
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    locked = tmp_path / "locked.png"
    locked.write_bytes(PNG)
    locked.chmod(0)
    cases = {tmp_path / "missing.png": "missing", folder: "unsupported", loop: {"damaged", "missing", "unreadable"}}
    if os.geteuid() != 0:  # root reads anything
        cases[locked] = "unreadable"
    for path, kinds in cases.items():
        with pytest.raises(ImageError) as e:
            decode_image(path)
        assert e.value.kind in ({kinds} if isinstance(kinds, str) else kinds), (path, e.value.kind)


def test_memory_budget_serialises_large_decodes():
    import threading

    from cifar10cnn.data.images import MemoryBudget

    budget, peak, lock = MemoryBudget(100), [0], threading.Lock()

    def work(n):
        with budget.hold(n):
            with lock:
                peak[0] = max(peak[0], budget.used)
            time.sleep(0.02)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 30, 100, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert budget.used == 0 and peak[0] <= 100


# --- the CLI: one line, non-zero status, never a traceback -------------------------------------------


def one_line_error(capsys, *args) -> str:
    status = cli(*args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, (args, out, err)
    assert "Traceback" not in out + err, err
    assert len(lines) == 1, (args, err)
    return lines[0]


def test_predict_reports_every_bad_image_and_keeps_going(quick_run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (make, _) in enumerate(IMAGE_CASES.values()):
        (folder / f"{i:02d}.png").write_bytes(make())
    (folder / "a[").mkdir()
    (folder / "a[" / "x].png").write_bytes(PNG)  # printed "…/a[/x].png": rich markup in a path is text, not parsed
    (folder / "[bold]b.png").write_bytes(PNG)
    status = cli("predict", quick_run, folder, "--json")
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and len(rows) == len(IMAGE_CASES) + 2 and "Traceback" not in err
    bad = sum("error" in r for r in rows)
    assert sum(OK not in e for _, e in IMAGE_CASES.values()) <= bad <= sum(e != OK for _, e in IMAGE_CASES.values())
    status = cli("predict", quick_run, folder / "a[/x].png", folder / "[bold]b.png")
    out, _ = capsys.readouterr()
    assert status == 0 and "a[/x].png" in out and "[bold]b.png" in out


def _config(tmp_path: Path, name: str, content: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


SET_CASES = [  # --set FIELD=VALUE that must be refused before any data is read
    "model_options=\"x\"", "model_options=[1]", "model_options={\"dropout\":5}", "model_options={\"nope\":1}",
    "lr=-1", "lr=abc", "lr=0", "batch_size=0", "batch_size=1.5", "batch_size=true", "epochs=\"10\"", "epochs=-3",
    "threads=-1", "threads=0", "precision=fp8", "optimizer=rmsprop", "monitor=accuracy", "schedule=linear",
    "flip=yes", "pad_mode=edge", "label_smoothing=1.5", "ema_decay=-0.1", "momentum=2", "warmup_fraction=1",
    "crop_padding=-1", "cutout=-3", "tta_translate=1", "time_budget=0", "backbone_lr_scale=0",
    "init_from=\"/nonexistent\"", "model=nope", "nonexistent_field=1", "no-equals-sign", "seed=\"x\"",
    "patience=-1", "val_size=0", "weight_decay=-1", "norm_lr_scale=0", "lookahead_from_epoch=0",
    "subset=-5", "eval_batch_size=0", "channels_last=1",
]


@pytest.mark.parametrize("setting", SET_CASES)
def test_bad_setting(setting, capsys, tmp_path):
    line = one_line_error(capsys, "train", "--set", setting, "--out", tmp_path / "r")
    assert line.startswith("error:") and not (tmp_path / "r").exists()


CONFIG_FILES = {
    "binary": b"\x00\xff\xfe\x89PNG" * 50, "truncated": '{"config": {"lr": 0.1', "list": "[1, 2, 3]",
    "deeply nested": "[" * 100_000 + "]" * 100_000, "config not an object": '{"config": 5}',
    "unknown field": '{"lr": 0.1, "colour": "red"}', "wrong type": '{"epochs": "many"}', "empty": "",
    "utf-16": '{"lr": 0.1}'.encode("utf-16"), "null": "null",
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_bad_config_file(name, capsys, tmp_path):
    path = _config(tmp_path, "config.json", CONFIG_FILES[name])
    one_line_error(capsys, "train", "--config", path, "--out", tmp_path / "r")


@pytest.mark.parametrize("path", ["missing.json", "."])
def test_config_file_that_is_not_a_file(path, capsys, tmp_path):
    one_line_error(capsys, "train", "--config", tmp_path / path, "--out", tmp_path / "r")


# --- run folders ----------------------------------------------------------------------------------------


def _damaged_run(quick_run: Path, tmp_path: Path, name: str) -> Path:
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    cfg = json.loads((run / "config.json").read_text())
    damage = {
        "no config": lambda: (run / "config.json").unlink(),
        "binary config": lambda: (run / "config.json").write_bytes(b"\x00\xff" * 100),
        "truncated config": lambda: (run / "config.json").write_text(json.dumps(cfg)[:100]),
        "config without config": lambda: (run / "config.json").write_text('{"config": 5}'),
        "threads -1 in config": lambda: (run / "config.json").write_text(
            json.dumps({**cfg, "config": {**cfg["config"], "threads": -1}})),
        "unknown model in config": lambda: (run / "config.json").write_text(
            json.dumps({**cfg, "config": {**cfg["config"], "model": "gone"}})),
        "no weights": lambda: (run / "model.safetensors").unlink(),
        "truncated weights": lambda: (run / "model.safetensors").write_bytes(
            (run / "model.safetensors").read_bytes()[:5000]),
        "random weights file": lambda: (run / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(9000)),
        "nan weights": lambda: poison_weights(run / "model.safetensors"),
        "weights of another model": lambda: _other_weights(run),
    }
    damage[name]()
    return run


def _other_weights(run: Path) -> None:
    from cifar10cnn.models import build_classifier
    from cifar10cnn.weights import open_safetensors, save_weights

    _, meta = open_safetensors(run / "model.safetensors", "weights")
    save_weights(run / "model.safetensors", build_classifier("resnet20", [0.5] * 3, [0.25] * 3), meta)


RUN_DAMAGE = ["no config", "binary config", "truncated config", "config without config", "threads -1 in config",
              "unknown model in config", "no weights", "truncated weights", "random weights file", "nan weights",
              "weights of another model"]


@pytest.mark.parametrize("damage", RUN_DAMAGE)
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_damaged_run_folder(quick_run, tmp_path, capsys, damage, command):
    if command == "export":
        pytest.importorskip("onnxruntime")
    run = _damaged_run(quick_run, tmp_path, damage)
    extra = {"predict": [tmp_path / "x.png"], "export": ["--out", tmp_path / "m.onnx"]}.get(command, [])
    (tmp_path / "x.png").write_bytes(PNG)
    one_line_error(capsys, command, run, *extra)


METRICS_DAMAGE = {"truncated": '{"test_accuracy": 0.5', "binary": b"\xff\xfe\x00" * 30, "list": "[]",
                  "nested": "[" * 50_000 + "]" * 50_000}


@pytest.mark.parametrize("name", list(METRICS_DAMAGE))
def test_damaged_metrics_in_compare(quick_run, tmp_path, capsys, name):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    _config(run, "metrics.json", METRICS_DAMAGE[name])
    line = one_line_error(capsys, "compare", quick_run, run)
    assert "metrics.json" in line


def test_damaged_checkpoint_on_resume(quick_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    (run / "metrics.json").unlink()
    ckpt = run / "checkpoint" / "last.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:10_000])
    one_line_error(capsys, "train", "--resume", "--out", run)


OUT_CASES = {
    "a file": lambda d: (d / "out").write_text("x"),
    "a foreign folder with config.json": lambda d: ((d / "out").mkdir(), (d / "out" / "config.json").write_text("{}"),
                                                    (d / "out" / "notes.txt").write_text("mine")),
    "a foreign folder": lambda d: ((d / "out").mkdir(), (d / "out" / "thesis.tex").write_text("mine")),
}


@pytest.mark.parametrize("name", list(OUT_CASES))
def test_overwrite_refuses_what_is_not_a_run(tmp_path, capsys, name):
    OUT_CASES[name](tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    one_line_error(capsys, "train", *QUICK, "--epochs", "1", "--out", tmp_path / "out", "--overwrite")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_overwrite_refuses_a_run_folder_holding_other_files(quick_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    (run / "my-notes.txt").write_text("keep me")
    line = one_line_error(capsys, "train", *QUICK, "--epochs", "1", "--out", run, "--overwrite")
    assert "my-notes.txt" in line and (run / "my-notes.txt").is_file()


@pytest.mark.parametrize("flags", [["--resume"], ["--resume", "--overwrite"]])
def test_resume_flags(tmp_path, capsys, flags):
    one_line_error(capsys, "train", *QUICK, "--epochs", "1", "--out", tmp_path / "nothing", *flags)


# --- data folders ---------------------------------------------------------------------------------------


def _batch_1(folder: Path, labels, row: int = 3072) -> None:
    """Replace the first training batch of the fake data set (1,200 images) with these labels."""
    write_pickle(folder / "data_batch_1", {b"data": np.zeros((1200, row), np.uint8), b"labels": labels})


DATA_DAMAGE = {
    "missing folder": lambda d: shutil.rmtree(d),
    "empty folder": lambda d: [p.unlink() for p in d.iterdir()],
    "missing batch": lambda d: (d / "data_batch_3").unlink(),
    "random bytes batch": lambda d: (d / "data_batch_1").write_bytes(np.random.default_rng(0).bytes(5000)),
    "scalar labels": lambda d: _batch_1(d, 3),
    "bytes labels": lambda d: _batch_1(d, b"\x01" * 1200),
    "labels out of range": lambda d: _batch_1(d, [11] * 1200),
    "wrong image shape": lambda d: _batch_1(d, [1] * 1200, row=100),
    "not a dict": lambda d: write_pickle(d / "data_batch_1", [1, 2, 3]),
    "a pickle that runs code": lambda d: (d / "data_batch_1").write_bytes(
        b"cos\nsystem\n(S'echo pwned'\ntR."),
    "huge batch file": lambda d: os.truncate(d / "data_batch_2", 200 * 2**20),
    "batch is a symlink loop": lambda d: ((d / "data_batch_4").unlink(), (d / "data_batch_4").symlink_to(
        d / "data_batch_4")),
    "no meta": lambda d: (d / "batches.meta").unlink(),
}


@pytest.mark.parametrize("name", list(DATA_DAMAGE))
def test_damaged_data_folder(fake_dir, tmp_path, capsys, name):
    DATA_DAMAGE[name](fake_dir)
    one_line_error(capsys, "data", "--data-dir", fake_dir, "--cache-dir", tmp_path / "cache")


def test_data_dir_symlink_loop(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    one_line_error(capsys, "data", "--data-dir", loop, "--cache-dir", tmp_path / "cache")


# --- flags ----------------------------------------------------------------------------------------------

FLAG_CASES = [
    ["serve", "RUN", "--port", "70000"], ["serve", "RUN", "--port", "0"], ["serve", "RUN", "--port", "-1"],
    ["serve", "RUN", "--host", "0.0.0.0"], ["serve", "RUN", "--host", "0.0.0.0", "--token", "short"],
    ["serve", "RUN", "--max-inflight", "0"], ["serve", "RUN", "--read-timeout", "0"],
    ["serve", "RUN", "--max-decode-mb", "-1"], ["serve", "RUN", "--decode-threads", "0"],
    ["serve", "RUN", "--max-upload-mb", "0"], ["serve", "/nonexistent-run"],
    ["loadtest", "ftp://127.0.0.1:8000"], ["loadtest", "http://[::1"], ["loadtest", "http://127.0.0.1:99999"],
    ["loadtest", "http://127.0.0.1:abc"], ["loadtest", "http://127.0.0.1:9", "--clients", "0"],
    ["loadtest", "http://127.0.0.1:9"],
    ["predict", "RUN", "x.png", "--top-k", "0"], ["predict", "RUN", "x.png", "--batch-size", "-1"],
    ["predict", "/nonexistent-run", "x.png"], ["train", "--epochs", "0"], ["train", "--epochs", "abc"],
    ["train", "--lr", "abc"], ["train", "--model", "nope"], ["train", "--recipe", "nope"],
    ["train", "--time-budget", "-1"], ["evaluate", "/nonexistent-run"], ["compare", "/nonexistent-run"],
    ["export", "RUN", "--check-images", "0"], ["bench", "--train-images", "0"], ["report", "/nonexistent-run"],
    ["nonsense-command"], ["train", "--no-such-flag"],
]


@pytest.mark.parametrize("args", FLAG_CASES, ids=[" ".join(a) for a in FLAG_CASES])
def test_bad_flag(quick_run, capsys, args, monkeypatch):
    monkeypatch.delenv("CIFAR10CNN_TOKEN", raising=False)
    one_line_error(capsys, *[str(quick_run) if a == "RUN" else a for a in args])


# --- HTTP -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(quick_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cifar10cnn.serving.app import Limits, create_app
    from cifar10cnn.serving.guard import Access

    app = create_app(quick_run, backend="torch", limits=Limits(max_body_bytes=2**20, max_files=4),
                     access=Access(token="t" * 20, cors_origins=["https://ok.example"]))
    with TestClient(app, base_url="http://localhost", headers={"Authorization": "Bearer " + "t" * 20}) as c:
        yield c


STATUS_FOR = {"empty": 422, "unsupported": 415, "too_large": 413, "damaged": 422}


@pytest.mark.parametrize("name", [n for n, (_, e) in IMAGE_CASES.items() if OK not in e][:25])
def test_http_image_case(client, name):
    make, expected = IMAGE_CASES[name]
    r = client.post("/v1/predict", content=make() or b"", headers={"content-type": "image/png"})
    assert r.status_code in {STATUS_FOR[k] for k in expected}, (r.status_code, r.text)
    assert set(r.json()) == {"error"} and r.json()["error"]["status"] == r.status_code


HTTP_CASES = {
    "text body": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415),
    "no content type": (dict(content=b"hello", headers={"content-type": ""}), 415),
    "body over the limit (declared)": (dict(content=b"x" * (2**20 + 1), headers={"content-type": "image/png"}), 413),
    "too many files": (dict(files=[("f", (f"{i}.png", PNG, "image/png")) for i in range(5)]), 413),
    "bad multipart": (dict(content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}),
                      (400, 422)),
    "multipart without files": (dict(content=b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
                                     headers={"content-type": "multipart/form-data; boundary=x"}), 422),
    "top_k 0": (dict(params={"top_k": 0}, content=PNG, headers={"content-type": "image/png"}), 422),
    "top_k 11": (dict(params={"top_k": 11}, content=PNG, headers={"content-type": "image/png"}), 422),
    "top_k abc": (dict(params={"top_k": "abc"}, content=PNG, headers={"content-type": "image/png"}), 422),
    "foreign host": (dict(content=PNG, headers={"content-type": "image/png", "host": "evil.example"}), 421),
    "rebinding host on our port": (dict(content=PNG, headers={"content-type": "image/png",
                                                             "host": "attacker.example:8000"}), 421),
    "cross-site origin": (dict(content=PNG, headers={"content-type": "image/png", "origin": "https://evil.example"}),
                          403),
    "null origin": (dict(content=PNG, headers={"content-type": "image/png", "origin": "null"}), 403),
    "no token": (dict(content=PNG, headers={"content-type": "image/png", "authorization": ""}), 401),
    "wrong token": (dict(content=PNG, headers={"content-type": "image/png", "authorization": "Bearer nope"}), 401),
}


@pytest.mark.parametrize("name", list(HTTP_CASES))
def test_http_case(client, name):
    kwargs, status = HTTP_CASES[name]
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code in (status if isinstance(status, tuple) else (status,)), (r.status_code, r.text)
    assert r.json()["error"]["status"] == r.status_code


def test_http_allowed_requests(client):
    ok = {"content": PNG, "headers": {"content-type": "image/png"}}
    assert client.post("/v1/predict", **ok).status_code == 200
    assert client.post("/v1/predict", content=PNG, headers={"content-type": "image/png",
                                                             "origin": "https://ok.example"}).status_code == 200
    assert client.post("/v1/predict", content=PNG, headers={"content-type": "image/png",
                                                             "origin": "http://localhost"}).status_code == 200
    assert client.get("/", headers={"authorization": ""}).status_code == 200  # the page itself is open
    assert client.get("/healthz", headers={"authorization": ""}).status_code == 200
    card = client.get("/v1/model").json()
    assert card["access"]["token_required"] and "t" * 20 not in json.dumps(card)


def test_inflight_cap_answers_503_with_retry_after():
    import asyncio

    from cifar10cnn.serving.guard import Access, Guard

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(slow_app, Access(max_inflight=2))
    sent: list[list[dict]] = []

    async def call():
        out: list[dict] = []
        sent.append(out)

        async def send(m):
            out.append(m)

        scope = {"type": "http", "path": "/v1/predict", "headers": [(b"host", b"localhost:8000")]}
        await guard(scope, None, send)

    async def main():
        tasks = [asyncio.create_task(call()) for _ in range(3)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    statuses = sorted(m[0]["status"] for m in sent)
    busy = next(m for m in sent if m[0]["status"] == 503)
    assert statuses == [200, 200, 503] and (b"retry-after", b"1") in busy[0]["headers"]


# --- one real server: slow clients, floods, refusals (bounded: a 2 s read timeout) --------------------------


def _get(port: int, path: str, host: str | None = None) -> tuple[int, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - t0


def test_real_server_against_slow_and_hostile_clients(quick_run, tmp_path):
    pytest.importorskip("uvicorn")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CIFAR10CNN_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "cifar10cnn.cli", "serve", str(quick_run), "--port", str(port),
                               "--backend", "torch", "--read-timeout", "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True)
    try:
        for _ in range(300):
            try:
                if _get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        # 100 half-open connections: part of a request line, then nothing
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        for s in slow:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _get(port, "/healthz")[0] == 200  # still answering while they hang
        t0 = time.perf_counter()
        for s in slow:
            s.settimeout(8)
            assert s.recv(100).startswith(b"HTTP/1.1 408")  # dropped by the server, not by us
            s.close()
        assert time.perf_counter() - t0 < 6
        # a header flood is cut at the header limit
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            s.settimeout(8)
            try:
                for i in range(5_000):
                    s.sendall(f"X-Filler-{i}: {'a' * 50}\r\n".encode())
            except OSError:
                pass  # the server closed the connection while we were still sending
            assert s.recv(100).startswith(b"HTTP/1.1 431")
        # a client that disconnects mid-upload: one log line, no traceback
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000\r\n\r\n" + PNG[:500])
            time.sleep(0.3)
        assert _get(port, "/v1/model", host="evil.example")[0] == 421
        assert _get(port, "/v1/model")[0] == 200
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err and "closed" in err and "disconnected before its request was read" in err
