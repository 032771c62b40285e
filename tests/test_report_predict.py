import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar10cnn.data.images import decode_image, fit_32
from cifar10cnn.evaluation.explain import grad_cam
from cifar10cnn.evaluation.metrics import calibration, per_class_table, wilson_interval
from cifar10cnn.inference import predict_logits
from cifar10cnn.runs import load_run_model

from .conftest import cli

# --- report -----------------------------------------------------------------------------------


def test_report_has_every_section_and_valid_pngs(quick_run, capsys):
    assert cli("report", quick_run) == 0
    assert str(quick_run / "report.html") in capsys.readouterr().out
    page = (quick_run / "report.html").read_text()
    for section in ["summary", "curves", "confusion", "per-class", "galleries", "gradcam", "calibration", "settings"]:
        assert f'<section id="{section}">' in page
    assert "http://" not in page and "https://" not in page  # self-contained, opens offline
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) > 10
    for b64 in embedded[:8]:
        import base64

        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    pngs = sorted(p.name for p in quick_run.glob("report_*.png"))
    assert pngs == ["report_calibration.png", "report_confusion.png", "report_correct.png", "report_curves.png",
                    "report_gradcam.png", "report_mistakes.png", "report_per_class.png"]
    for p in quick_run.glob("report_*.png"):
        with Image.open(p) as im:
            im.verify()
    for cls in ["airplane", "truck"]:
        assert f"<summary>{cls}:" in page  # per-class galleries on demand
    assert "1,454,730" in page and "ECE" in page and "Wilson" in page


def test_report_to_another_file(quick_run, tmp_path):
    assert cli("report", quick_run, "--out", tmp_path / "mine.html") == 0
    assert (tmp_path / "mine.html").is_file() and (tmp_path / "mine_curves.png").is_file()


def test_report_of_an_unfinished_run_is_refused(quick_run, tmp_path, capsys):
    d = tmp_path / "unfinished"
    d.mkdir()
    (d / "config.json").write_text((quick_run / "config.json").read_text())
    assert cli("report", d) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(900, 1000)
    assert lo == pytest.approx(0.8798, abs=1e-4) and hi == pytest.approx(0.9171, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_per_class_table_and_calibration_on_known_numbers():
    cm = torch.tensor([[8, 2], [1, 9]])
    rows = per_class_table(cm, ["a", "b"])
    assert rows[0]["recall"] == 0.8 and rows[0]["precision"] == pytest.approx(8 / 9)
    assert rows[1]["f1"] == pytest.approx(2 * (9 / 11) * 0.9 / (9 / 11 + 0.9))
    probs = torch.tensor([[0.9, 0.1]] * 10)  # 90% confident, right 6 times in 10 → ECE 0.3
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert calibration(probs, labels)["ece"] == pytest.approx(0.3)


def test_grad_cam_points_at_the_evidence():
    # channel 0 of the conv sees red, channel 1 green; class 1 is "red", class 0 is "green"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.Flatten(), torch.nn.Linear(2048, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1.0
        net[0].weight[1, 1] = 1.0
        net[2].weight.zero_()
        net[2].weight[1, :1024] = 1.0
        net[2].weight[0, 1024:] = 1.0
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, :16, :16] = 1.0  # red top-left
    x[0, 1, 16:, 16:] = 1.0  # green bottom-right
    red = grad_cam(net, x, torch.tensor([1]), layer=net[0])[0]
    green = grad_cam(net, x, torch.tensor([0]), layer=net[0])[0]
    assert red[:14, :14].mean() > 0.9 and red[18:, 18:].mean() < 0.1
    assert green[18:, 18:].mean() > 0.9 and green[:14, :14].mean() < 0.1


# --- images -----------------------------------------------------------------------------------


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_32x32_png_passes_through_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    p = _save(Image.fromarray(a), tmp_path / "x.png")
    assert np.array_equal(decode_image(p), a)


def test_resize_keeps_the_central_square():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))  # blue middle third
    out = np.asarray(fit_32(img))
    assert out.shape == (32, 32, 3) and out[:, :, 2].min() > 200 and out[:, :, 0].max() < 60


FORMAT_MODES = [("PNG", "png", m) for m in ("RGB", "L", "RGBA", "P", "LA", "I;16")] + [
    ("JPEG", "jpg", m) for m in ("RGB", "L", "CMYK")] + [("BMP", "bmp", m) for m in ("RGB", "L", "P")] + [
    ("WEBP", "webp", m) for m in ("RGB", "RGBA")]


@pytest.mark.parametrize("fmt, ext, mode", FORMAT_MODES)
def test_every_format_and_mode_decodes(tmp_path, fmt, ext, mode):
    img = Image.new("RGB", (64, 48), (30, 120, 200)).convert(mode)
    out = decode_image(_save(img, tmp_path / f"x.{ext}", format=fmt))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_rgba_is_composited_on_white(tmp_path):
    p = _save(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), tmp_path / "t.png")
    assert decode_image(p).min() == 255


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (64, 32), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 32, 32))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed: white ends up on top
    out = decode_image(_save(img, tmp_path / "r.jpg", exif=exif, quality=95))
    assert out[:8].mean() > 200 and out[-8:].mean() < 50


def _png_16bit(path: Path, value: int) -> Path:
    raw = b"".join(b"\x00" + struct.pack(">H", value) * 32 for _ in range(32))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    assert decode_image(_png_16bit(tmp_path / "a.png", 65535)).min() == 255
    assert abs(int(decode_image(_png_16bit(tmp_path / "b.png", 32896)).mean()) - 128) <= 1


# --- predict ------------------------------------------------------------------------------------


def test_predict_agrees_with_evaluate_image_by_image(quick_run, data, tmp_path, capsys):
    n = 200
    folder = tmp_path / "test_pngs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(data.test_x[i].numpy()).save(folder / f"{i:05d}.png")
    assert cli("predict", quick_run, folder, "--json", "--top-k", "10", "--batch-size", "64") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [Path(r["file"]).name for r in rows] == [f"{i:05d}.png" for i in range(n)]
    model, meta, rt = load_run_model(quick_run)
    probs = predict_logits(model, data.test_x[:n], rt).softmax(1)
    classes = meta["classes"]
    for i, r in enumerate(rows):
        assert r["top_k"][0]["class"] == classes[int(probs[i].argmax())]
        got = {d["class"]: d["probability"] for d in r["top_k"]}
        assert max(abs(got[c] - probs[i, k].item()) for k, c in enumerate(classes)) < 1e-5


def test_predict_prints_a_table_with_top_k(quick_run, tmp_path, data, capsys):
    p = tmp_path / "cat.png"
    Image.fromarray(data.test_x[0].numpy()).resize((200, 200)).save(p)
    assert cli("predict", quick_run, p, "--top-k", "2", "--tta") == 0
    out = capsys.readouterr().out
    assert "cat.png" in out and out.count("%") >= 2


def test_bad_images_never_stop_the_batch(quick_run, tmp_path, data, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(data.test_x[1].numpy()).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    blob = io.BytesIO()
    Image.fromarray(data.test_x[2].numpy()).save(blob, format="PNG")
    (tmp_path / "truncated.png").write_bytes(blob.getvalue()[:200])
    Image.new("L", (9000, 9000)).save(tmp_path / "bomb.png", optimize=True)  # 81 MP, a few KB on disk
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (8, 8)).save(gif)
    empty_folder = tmp_path / "nothing_here"
    empty_folder.mkdir()
    inputs = [good, tmp_path / "empty.png", tmp_path / "text.jpg", tmp_path / "truncated.png", tmp_path / "bomb.png",
              gif, tmp_path / "missing.png", empty_folder]
    assert cli("predict", quick_run, *inputs, "--json") == 1
    rows = {Path(r["file"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert "top_k" in rows["good.png"]
    assert rows["empty.png"]["error"] == "empty file (0 bytes)"
    assert "not an image" in rows["text.jpg"]["error"]
    assert "damaged" in rows["truncated.png"]["error"]
    assert "too large" in rows["bomb.png"]["error"]
    assert "unsupported image format GIF" in rows["anim.gif"]["error"]
    assert "no such file" in rows["missing.png"]["error"]
    assert "folder has no images" in rows["nothing_here"]["error"]
    assert all("\n" not in r.get("error", "") for r in rows.values())


@pytest.mark.parametrize("args, message", [(["--top-k", "0"], "--top-k must be"), (["--batch-size", "0"], "--batch")])
def test_predict_bad_flags(quick_run, tmp_path, args, message, capsys):
    assert cli("predict", quick_run, tmp_path, *args) == 2
    assert message in capsys.readouterr().err


def test_predict_without_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"config": {"model": "seed"}}))
    assert cli("predict", tmp_path, tmp_path) == 2
    assert "no weights file" in capsys.readouterr().err


def test_ties_break_like_argmax(quick_run, tmp_path, monkeypatch, data):
    """bf16 logits tie now and then; predict must name the class `evaluate`'s argmax names."""
    import cifar10cnn.predict as predict_module

    logits = torch.zeros(1, 10)
    logits[0, 8] = logits[0, 9] = 3.0  # ship and truck exactly tied
    monkeypatch.setattr(predict_module, "predict_logits", lambda *a, **k: logits.clone())
    p = tmp_path / "x.png"
    Image.fromarray(data.test_x[0].numpy()).save(p)
    (pred,) = predict_module.predict_files(quick_run, [(p, None)], top_k=2)
    assert [c for c, _ in pred.top_k] == ["ship", "truck"] and int(logits.argmax()) == 8


def test_transparent_palette_image_is_composited_on_white_at_any_size(tmp_path):
    for size in ((32, 32), (64, 48)):
        img = Image.new("P", size, 0)
        img.putpalette([0, 0, 0] * 256)
        assert decode_image(_save(img, tmp_path / f"p{size[0]}.png", transparency=0)).min() == 255
