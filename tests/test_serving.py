"""The HTTP service, its batcher and limits, the ONNX export, the load test, and the web page in a browser."""

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cifar10cnn.data.images import decode_image  # noqa: E402
from cifar10cnn.models import list_models  # noqa: E402
from cifar10cnn.serving.app import Limits, create_app  # noqa: E402

LOCAL = "http://localhost"  # the guard serves loopback Host names only
from cifar10cnn.serving.batcher import DynamicBatcher, QueueFull  # noqa: E402

from .conftest import cli, free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_DIR = os.environ.get("CIFAR10CNN_SCREENSHOTS")  # set to save the page screenshot for the README


def _png(array: np.ndarray, size: int | None = None) -> bytes:
    img = Image.fromarray(array)
    if size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(quick_run):
    app = create_app(quick_run, max_batch=16, max_delay_ms=2, backend="torch",
                     limits=Limits(max_body_bytes=64 * 1024, max_files=4, max_pixels=1_000_000))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def test_pngs(data):
    return [_png(data.test_x[i].numpy()) for i in range(8)]


def test_model_health_docs_and_page(client, quick_run):
    m = client.get("/v1/model").json()
    assert m["name"] == "seed" and m["trainable_params"] == 1_454_730 and len(m["classes"]) == 10
    assert m["test_accuracy"] == json.loads((quick_run / "metrics.json").read_text())["test_accuracy"]
    assert m["input"]["height"] == 32 and m["precision"] in ("bf16", "fp32")
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200 and "/v1/predict" in client.get("/openapi.json").text
    page = client.get("/")
    assert page.status_code == 200 and "cifar10cnn" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_raw_body_prediction(client, test_pngs):
    r = client.post("/v1/predict", content=test_pngs[0], headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["predictions"][0]["top_k"]
    assert body["model"] == "seed" and len(top) == 5 and body["time_ms"] > 0
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_multipart_keeps_order_and_matches_predict(client, quick_run, test_pngs):
    from cifar10cnn.inference import predict_logits
    from cifar10cnn.runs import load_run_model

    files = [("files", (f"{i}.png", test_pngs[i], "image/png")) for i in range(4)]
    r = client.post("/v1/predict?top_k=10", files=files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["0.png", "1.png", "2.png", "3.png"]
    model, meta, rt = load_run_model(quick_run)
    import torch

    images = torch.from_numpy(np.stack([decode_image(b) for b in test_pngs[:4]]))
    ref = predict_logits(model, images, rt).softmax(1)
    for p, row in zip(preds, ref, strict=True):
        got = {t["class"]: t["probability"] for t in p["top_k"]}
        assert p["top_k"][0]["class"] == meta["classes"][int(row.argmax())]
        assert max(abs(got[c] - row[k].item()) for k, c in enumerate(meta["classes"])) < 2e-3


def test_explain_returns_pngs(client, test_pngs):
    r = client.post("/v1/predict?explain=1", content=test_pngs[1], headers={"content-type": "image/png"})
    p = r.json()["predictions"][0]
    small = Image.open(io.BytesIO(base64.b64decode(p["input_png"])))
    cam = Image.open(io.BytesIO(base64.b64decode(p["gradcam_png"])))
    assert small.size == (32, 32) and cam.size == (128, 128)


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"content": b"x" * 70_000, "headers": {"content-type": "image/png"}}, 413, "exceeds the limit"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"content": b"not an image at all", "headers": {"content-type": "image/png"}}, 415, "not an image"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422, "empty"),
    ],
)
def test_limits_and_bad_bodies(client, kwargs, status, message):
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status and message in r.json()["error"]["message"]


def test_body_limit_is_checked_while_reading(client):
    def chunks():  # no Content-Length: the server must count as it reads
        for _ in range(100):
            yield b"y" * 1024

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]


def test_damaged_gif_bomb_and_too_many_files(client, test_pngs):
    r = client.post("/v1/predict", content=test_pngs[0][:120], headers={"content-type": "image/png"})
    assert r.status_code == 422 and "damaged" in r.json()["error"]["message"]
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    r = client.post("/v1/predict", content=gif.getvalue(), headers={"content-type": "image/gif"})
    assert r.status_code == 415 and "GIF" in r.json()["error"]["message"]
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, format="PNG")  # 4 MP > the 1 MP limit of this app, 4 KB on the wire
    r = client.post("/v1/predict", content=bomb.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "too large" in r.json()["error"]["message"]
    files = [("files", (f"{i}.png", test_pngs[i], "image/png")) for i in range(5)]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 413 and "too many files" in r.json()["error"]["message"]
    r = client.post("/v1/predict?top_k=11", content=test_pngs[0], headers={"content-type": "image/png"})
    assert r.status_code == 422


def test_full_queue_answers_503_with_retry_after(client, test_pngs, monkeypatch):
    async def full(_images):
        raise QueueFull("1024 images already queued (limit 1024)")

    monkeypatch.setattr(client.app.state.batcher, "submit", full)
    r = client.post("/v1/predict", content=test_pngs[0], headers={"content-type": "image/png"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]


# --- the batcher -------------------------------------------------------------------------------


def _row_ids(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, :1].astype(np.float32)  # each "probability" row echoes its image's id


def test_concurrent_requests_share_forward_passes_and_keep_order():
    async def main():
        b = DynamicBatcher(_row_ids, max_batch=64, max_delay_ms=30)
        await b.start()
        jobs = [np.full((1 + i % 3, 32, 32, 3), i, np.uint8) for i in range(40)]
        results = await asyncio.gather(*(b.submit(j) for j in jobs))
        await b.stop()
        return b.stats, jobs, results

    stats, jobs, results = asyncio.run(main())
    for j, r in zip(jobs, results, strict=True):
        assert r.shape == (len(j), 1) and (r == j[0, 0, 0, 0]).all()
    assert stats.forward_passes < 10 and stats.images == sum(len(j) for j in jobs)
    assert stats.largest_batch <= 64


def test_bounded_queue_rejects_instead_of_growing():
    def slow(images):
        time.sleep(0.05)
        return _row_ids(images)

    async def main():
        b = DynamicBatcher(slow, max_batch=4, max_delay_ms=1, max_queue_images=8)
        await b.start()
        outcomes = await asyncio.gather(*(b.submit(np.zeros((2, 32, 32, 3), np.uint8)) for _ in range(20)),
                                        return_exceptions=True)
        await b.stop()
        return outcomes

    outcomes = asyncio.run(main())
    rejected = [o for o in outcomes if isinstance(o, QueueFull)]
    assert rejected and len(rejected) < 20
    assert all(isinstance(o, np.ndarray) for o in outcomes if not isinstance(o, QueueFull))


# --- ONNX ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_file(quick_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "seed.onnx"
    assert cli("export", quick_run, "--out", path, "--check-images", "64") == 0
    return path


def test_export_round_trip(onnx_file, quick_run, data, capsys):
    import onnx

    from cifar10cnn.export import verify_onnx

    proto = onnx.load(str(onnx_file))
    inp = proto.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8
    assert inp.shape.dim[0].dim_param and [d.dim_value for d in inp.shape.dim[1:]] == [3, 32, 32]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cifar10cnn.model"] == "seed" and "airplane" in meta["cifar10cnn.classes"]
    check = verify_onnx(onnx_file, quick_run, data.test_x[:256])
    assert check["ok"] and check["same_top1"] == 256 and check["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_exports(name, tmp_path):
    """ONNX round trip for each registered model (fresh weights; BatchNorm statistics perturbed)."""
    pytest.importorskip("onnxruntime")
    import torch

    from cifar10cnn.export import compare_with_onnx, export_model
    from cifar10cnn.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier(name, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]).eval()
    for m in model.modules():  # non-trivial running statistics, so normalisation bugs would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = export_model(model, tmp_path / f"{name}.onnx", {"model": name, "classes": list("abcdefghij")})
    images = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    check = compare_with_onnx(path, model, images)
    assert check["ok"], check


def test_onnx_backend_agrees_with_torch(quick_run, onnx_file, test_pngs):
    shutil.copy(onnx_file, quick_run / "model.onnx")
    try:
        auto, torch_app = create_app(quick_run, backend="auto"), create_app(quick_run, backend="torch")
        with TestClient(auto, base_url=LOCAL) as c, TestClient(torch_app, base_url=LOCAL) as t:
            files = [("files", (f"{i}.png", test_pngs[i], "image/png")) for i in range(8)]
            a = c.post("/v1/predict", files=files).json()
            b = t.post("/v1/predict", files=files).json()
            assert c.get("/v1/model").json()["backend"].startswith("onnxruntime")
        assert [p["top_k"][0]["class"] for p in a["predictions"]] == [p["top_k"][0]["class"] for p in b["predictions"]]
    finally:
        (quick_run / "model.onnx").unlink()


# --- a real server process -------------------------------------------------------------------------


TOKEN = "a-test-token-of-some-length"


@pytest.fixture(scope="module")
def server(quick_run):
    yield from _serve(quick_run)


@pytest.fixture(scope="module")
def token_server(quick_run):
    yield from _serve(quick_run, "--token", TOKEN)


def _serve(run, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cifar10cnn.cli", "serve", str(run), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_real_server_answers(server, test_pngs):
    req = urllib.request.Request(server + "/v1/predict", data=test_pngs[2], headers={"Content-Type": "image/png"})
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert len(body["predictions"][0]["top_k"]) == 5


def test_loadtest_against_the_real_server(server, capsys):
    assert cli("loadtest", server, "--clients", "4", "--seconds", "2", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["requests"] > 10 and r["errors"] == 0 and r["p50_ms"] > 0 and r["images_per_s"] > 0
    assert r["forward_passes"] is not None and r["forward_passes"] <= r["requests"]
    assert r["server_rss_mb_samples"] and r["server_rss_mb_end"] > 0


def test_loadtest_refuses_other_hosts(capsys):
    assert cli("loadtest", "http://192.0.2.10:8000", "--seconds", "1") == 2
    assert "loopback" in capsys.readouterr().err


def test_serve_refuses_bad_flags(quick_run, capsys):
    assert cli("serve", quick_run, "--max-batch", "0") == 2
    assert "--max-batch must be positive" in capsys.readouterr().err


# --- the web page in a real browser ---------------------------------------------------------------


def test_loadtest_with_a_token(token_server, capsys):
    assert cli("loadtest", token_server, "--clients", "2", "--seconds", "1", "--json") == 2  # 401s are errors
    capsys.readouterr()
    assert cli("loadtest", token_server, "--clients", "2", "--seconds", "1", "--json", "--token", TOKEN) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["errors"] == 0 and r["requests"] > 0


@pytest.mark.parametrize("with_token", [False, True], ids=["open", "token"])
def test_web_page_in_chromium(request, data, tmp_path, with_token):
    server = request.getfixturevalue("token_server" if with_token else "server")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI (.ci/run installs it)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    image = tmp_path / "ship.png"
    image.write_bytes(_png(data.test_x[1].numpy(), size=128))
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server + ("/#token=" + TOKEN if with_token else "/"))  # as `serve --token` prints it
        page.wait_for_function("document.getElementById('model').textContent.includes('parameters')")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#result:not([hidden])", timeout=20_000)
        top = page.text_content("#top")
        bars = page.locator(".bar").count()
        if with_token:  # the token left the address bar (kept in the tab's session storage)
            assert "token" not in page.url
        if SCREENSHOT_DIR and not with_token:
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / "serve-page.png"), full_page=True)
        browser.close()
    classes = data.classes
    assert any(top.startswith(c) for c in classes) and "%" in top and bars == 5
