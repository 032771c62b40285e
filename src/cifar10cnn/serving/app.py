"""`cifar10cnn serve`: the HTTP service (FastAPI) for a trained run.

    POST /v1/predict      images as multipart files (any field name) or one raw image body;
                          ?top_k=5 (1–10), ?explain=1 adds the 32×32 input and a Grad-CAM overlay (PNG, base64)
    GET  /v1/model        name, classes, trainable params, test accuracy, input, precision, backend
    GET  /healthz         liveness + batcher counters + resident memory
    GET  /                the web page;  GET /docs  OpenAPI docs

Limits (each a JSON error {"error": {"status", "message"}}): request body size, checked while
reading (413); files per request (413); pixels per image and decoded bytes per image, both from the
header before decoding (413); not an image or an unsupported type (415); a damaged image (422);
requests in flight and a full request queue (503 + Retry-After). Who may call, and the slow-client
limits, are in guard.py and server.py.

Memory is bounded: at most `max_inflight` requests hold a body (≤ `max_body_bytes`, one copy once
the form is parsed), and decoding runs in `decode_threads` threads off the event loop that share one
`max_decode_bytes` budget — so a request for `/healthz` is answered while large uploads decode. Only
tiny uploads (≤ `inline_bytes`, headers saying ≤ `inline_pixels`) are decoded in place.
Preprocessing is `predict`'s (`decode_image`), the model is the run's best weights. No name or path
from a request is ever used on the file system: uploads are decoded in memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from ..data.images import MAX_DECODE_BYTES, MAX_PIXELS, SIZE, ImageError, MemoryBudget, decode_image
from ..errors import UserError
from ..evaluation.explain import grad_cam, overlay_png
from ..inference import predict_logits
from ..runs import image_size, load_run_model, read_metrics
from .batcher import DynamicBatcher, QueueFull
from .guard import Access, Guard, error_response

PAGE = Path(__file__).parent / "page" / "index.html"
STATUS_FOR_IMAGE_ERROR = {"unsupported": 415, "too_large": 413}  # other kinds: 422
log = logging.getLogger("cifar10cnn.serve")


@dataclass
class Limits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_files: int = 64
    max_pixels: int = MAX_PIXELS
    max_decode_bytes: int = MAX_DECODE_BYTES
    decode_threads: int = 2
    inline_pixels: int = 64 * 64  # uploads this small (by their header) and ≤ inline_bytes are decoded in place:
    inline_bytes: int = 64 * 1024  # bounded work (< 1 ms) that would cost more as a hop to the decode threads
    max_queue_images: int = 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def make_infer(run_dir: Path, backend: str):
    """(infer(uint8 N×32×32×3) → probabilities, torch model, metadata, description).

    backend "auto" picks onnxruntime when it is installed: on the 2-core reference CPU it served the
    seed model at 1,698 images/s (32 clients) against 1,109 for PyTorch bf16 (benchmarks/serve_bench.py).
    """
    model, meta, rt = load_run_model(run_dir)
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            backend = "onnx"
        except ImportError:
            backend = "torch"
    if backend == "onnx":
        from ..export import current_onnx

        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("--backend onnx needs onnxruntime: pip install 'cifar10cnn[serve]'") from None
        onnx_path, exported = current_onnx(run_dir)
        if exported:
            log.warning("exported %s: %s", onnx_path, exported)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = rt.threads
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

        def infer(images: np.ndarray) -> np.ndarray:
            return session.run(None, {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]

        return infer, model, meta, rt, "onnxruntime fp32"

    def infer(images: np.ndarray) -> np.ndarray:
        return predict_logits(model, torch.from_numpy(images), rt, batch_size=len(images)).softmax(1).numpy()

    return infer, model, meta, rt, f"torch {rt.precision}"


async def read_limited(request: Request, limits: Limits) -> bytes:
    """The request body, refused (413) as soon as it passes the limit — declared or streamed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body {int(declared):,} bytes exceeds the limit of {limits.max_body_bytes:,}")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limits.max_body_bytes:
            raise ApiError(413, f"request body exceeds the limit of {limits.max_body_bytes:,} bytes")
        body += chunk
    return bytes(body)


async def uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded image: multipart file fields, or one raw image/* body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_image = ctype.startswith("image/") or ctype == "application/octet-stream"
    if ctype != "multipart/form-data" and not is_image:  # refused before reading the body
        raise ApiError(415, f"unsupported content type {ctype or '(none)'!r}; send multipart/form-data files "
                            f"or a raw image/* body")
    body = await read_limited(request, limits)
    if ctype != "multipart/form-data":
        if not body:
            raise ApiError(422, "empty request body")
        return [("body", body)]
    request._body = body  # Starlette parses the form from this buffer; nothing touches the disk by name
    try:
        form = await request.form(max_files=limits.max_files + 1, max_fields=limits.max_files + 16)
    except Exception as e:  # malformed multipart or over Starlette's count
        raise ApiError(413 if "Too many" in str(e) else 400, f"bad multipart body: {e}") from None
    finally:
        request._body = b""  # the parts now hold the files: drop the raw body
    del body
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if len(files) > limits.max_files:
        raise ApiError(413, f"too many files: {len(files)} (limit {limits.max_files})")
    out = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    await form.close()
    if not out:
        raise ApiError(422, "no files in the multipart body; send images as file fields")
    return out


def decode_small(files: list[tuple[str, bytes]], limits: Limits, size: int = SIZE) -> np.ndarray | None:
    """Decode uploads in place when they are tiny — at most `inline_bytes` in all and `inline_pixels` each by
    their headers (bounded work, well under a millisecond) — else None: they go to the decode threads."""
    if sum(len(blob) for _, blob in files) > limits.inline_bytes:
        return None
    try:
        return np.stack([decode_image(blob, limits.inline_pixels, size=size) for _, blob in files])
    except ImageError:
        return None  # too large for here, or bad: the decode threads decide, with the usual limits and errors


def decode_all(files: list[tuple[str, bytes]], limits: Limits, budget: MemoryBudget | None = None,
               size: int = SIZE) -> np.ndarray:
    arrays = []
    for name, blob in files:
        try:
            arrays.append(decode_image(blob, limits.max_pixels, limits.max_decode_bytes, budget, size))
        except ImageError as e:
            raise ApiError(STATUS_FOR_IMAGE_ERROR.get(e.kind, 422), f"{name}: {e}") from None
    return np.stack(arrays)


def explain_images(model, rt, images: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Each image and its Grad-CAM overlay for the predicted class, as base64 PNGs."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(rt.device)
    cams = grad_cam(model, x, torch.from_numpy(predicted)).numpy()
    out = []
    for img, cam in zip(images, cams, strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append({"input_png": base64.b64encode(buf.getvalue()).decode(),
                    "gradcam_png": base64.b64encode(overlay_png(img, cam)).decode()})
    return out


def model_card(run_dir: Path, model, meta: dict, backend_desc: str, max_batch: int, max_delay_ms: float,
               limits: Limits) -> dict:
    """/v1/model: what is served. Its accuracy is the single-view test figure: the service predicts one view."""
    metrics = read_metrics(run_dir) if (run_dir / "metrics.json").is_file() else {}
    return {
        "name": meta.get("model"), "run": run_dir.name, "classes": meta["classes"],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "test_accuracy": metrics.get("test_accuracy"), "test_accuracy_views": 1,
        "input": {"height": image_size(meta), "width": image_size(meta), "channels": 3, "dtype": "uint8",
                  "resize": f"centre square (the shorter side), scaled to {image_size(meta)}×{image_size(meta)}"},
        "precision": backend_desc.split()[-1], "backend": backend_desc, "max_batch": max_batch,
        "max_delay_ms": max_delay_ms, "limits": asdict(limits),
    }


def install_error_handlers(app: FastAPI) -> None:
    """Every error is one JSON object: {"error": {"status", "message"}}."""

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request, _exc: ClientDisconnect):
        client = request.client
        log.warning("client %s disconnected before its request was read", f"{client.host}:{client.port}"
                    if client else "?")
        return error_response(400, "client disconnected")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")


def create_app(run_dir: Path, max_batch: int = 64, max_delay_ms: float = 5.0, limits: Limits | None = None,
               backend: str = "auto", access: Access | None = None) -> Guard:
    """The service for one run: the FastAPI app behind its `Guard` (host, origin, token, requests in flight)."""
    run_dir = Path(run_dir)
    limits, access = limits or Limits(), access or Access()
    infer, model, meta, rt, backend_desc = make_infer(run_dir, backend)
    classes: list[str] = meta["classes"]
    size = image_size(meta)  # the side of the images the run was trained on (predict decodes to the same)
    batcher = DynamicBatcher(infer, max_batch, max_delay_ms, limits.max_queue_images)
    card = model_card(run_dir, model, meta, backend_desc, max_batch, max_delay_ms, limits)
    card["access"] = access.describe()
    decoder = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="decode")
    budget = MemoryBudget(limits.max_decode_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()
        decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="cifar10cnn", version="1", lifespan=lifespan,
                  description=f"{len(meta['classes'])}-class image classifier `{meta.get('model')}` from run "
                              f"`{run_dir.name}`.")
    app.state.batcher = batcher
    install_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "rss_mb": round(rss_mb(), 1), "batcher": asdict(batcher.stats)}

    @app.get("/v1/model")
    async def model_info():
        return card

    @app.post("/v1/predict", summary="classify one or more images")
    async def predict(request: Request, top_k: int = 5, explain: int = 0):
        if not 1 <= top_k <= len(classes):
            raise ApiError(422, f"top_k must be between 1 and {len(classes)}, got {top_k}")
        t0 = time.perf_counter()
        files = await uploads(request, limits)
        images = decode_small(files, limits, size)  # e.g. 32×32 PNGs: cheaper in place than the hop to a thread
        if images is None:
            images = await asyncio.get_running_loop().run_in_executor(decoder, decode_all, files, limits, budget, size)
        names = [name for name, _ in files]
        del files  # only the 32×32 arrays from here on
        try:
            probs = await batcher.submit(images)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}; retry shortly", {"Retry-After": "1"}) from None
        if not np.isfinite(probs).all():
            raise ApiError(500, "the model produced non-finite probabilities for this input")
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]  # ties → lower index, like argmax
        results = [{"file": name, "top_k": [{"class": classes[c], "probability": round(float(p[c]), 6)} for c in idx]}
                   for name, p, idx in zip(names, probs, order, strict=True)]
        if explain:
            # Grad-CAM runs on the model thread, never concurrently with a batched forward pass
            extra = await batcher.run_exclusive(explain_images, model, rt, images, order[:, 0])
            for r, e in zip(results, extra, strict=True):
                r.update(e)
        # a Response skips FastAPI's generic encoder: this is the hot path under load
        return JSONResponse({"model": meta.get("model"), "predictions": results,
                             "time_ms": round((time.perf_counter() - t0) * 1000, 2)})

    guard = Guard(app, access)
    guard.state = app.state
    return guard
