"""`cifar10cnn loadtest URL`: closed-loop load on a running `serve`, bounded in time and count.

Each of `clients` connections sends POST /v1/predict with one raw PNG body (or a multipart body of
`images_per_request` PNGs) over HTTP/1.1 keep-alive, waits for the answer, and sends the next, until
`seconds` have passed or `max_requests` were sent. Only loopback addresses are accepted as targets.
The client is a minimal asyncio HTTP/1.1 writer/reader so that it costs the shared CPU little.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from ..errors import UserError


@dataclass
class LoadResult:
    requests: int = 0
    images: int = 0
    errors: int = 0
    statuses: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)
    seconds: float = 0.0
    rss_mb_start: float | None = None
    rss_mb_end: float | None = None
    rss_mb_samples: list = field(default_factory=list)  # server memory every ~2 s during the run
    forward_passes: int | None = None

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([float("nan")])
        return {
            "requests": self.requests, "images": self.images, "errors": self.errors, "statuses": self.statuses,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "images_per_s": round(self.images / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "server_rss_mb_start": self.rss_mb_start, "server_rss_mb_end": self.rss_mb_end,
            "server_rss_mb_samples": self.rss_mb_samples, "forward_passes": self.forward_passes,
        }


def loopback_target(url: str) -> tuple[str, int, str]:
    try:
        parts = urlsplit(url)
    except ValueError as e:  # e.g. an unbalanced "[" in the host
        raise UserError(f"loadtest needs an http://host:port URL, got {url!r} ({e})") from None
    if parts.scheme != "http" or not parts.hostname:
        raise UserError(f"loadtest needs an http://host:port URL, got {url!r}")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, None)}
    except socket.gaierror:
        raise UserError(f"cannot resolve {parts.hostname!r}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise UserError(f"loadtest only targets this machine (loopback); {parts.hostname} is {', '.join(addresses)}")
    try:
        port = parts.port or 80
    except ValueError as e:  # "Port could not be cast to integer value", "Port out of range 0-65535"
        raise UserError(f"loadtest needs an http://host:port URL, got {url!r} ({e})") from None
    return parts.hostname, port, parts.path.rstrip("/")


def _request_bytes(host: str, port: int, path: str, pngs: list[bytes], token: str | None = None) -> bytes:
    if len(pngs) == 1:
        body, ctype = pngs[0], "image/png"
    else:
        boundary = uuid.uuid4().hex
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.png\"\r\n"
                 f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n" for i, png in enumerate(pngs)]
        body, ctype = b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
    head = (f"POST {path}/v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n"
            + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def _first_request(base: str, image: bytes, token: str | None) -> None:
    """One request before the load: a refusal the whole run would repeat is one clear line instead."""
    headers = {"Content-Type": "image/png", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/v1/predict", data=image, headers=headers), timeout=30)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise UserError("the server requires a bearer token" + (" and refused this one" if token else "")
                            + ": pass --token or set CIFAR10CNN_TOKEN") from None
        if e.code in (403, 421):
            raise UserError(f"the server refused this client ({e.code}): see serve --allow-host") from None
    except OSError:
        pass  # counted as errors by the load itself


def _health(base: str) -> dict:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return {}


async def _client(host, port, payload: bytes, per_request: int, deadline: float, budget: list, result: LoadResult):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                writer.write(payload)
                await writer.drain()
                status = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
            if status == 200:
                result.images += per_request
            else:
                result.errors += 1
    finally:
        writer.close()


def run_loadtest(url: str, clients: int = 32, seconds: float = 20.0, max_requests: int = 1_000_000,
                 images: list[bytes] | None = None, images_per_request: int = 1, token: str | None = None) -> dict:
    if clients <= 0 or seconds <= 0 or max_requests <= 0 or images_per_request <= 0:
        raise UserError("--clients, --seconds, --max-requests and --images-per-request must be positive")
    if seconds > 600:
        raise UserError("--seconds is capped at 600")
    host, port, path = loopback_target(url)
    base = f"http://{host}:{port}{path}"
    if not _health(base):
        raise UserError(f"no cifar10cnn server answers at {base}/healthz")
    if not images:
        import io

        from PIL import Image

        rng = np.random.default_rng(0)
        images = []
        for _ in range(images_per_request):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            images.append(buf.getvalue())
    payload = _request_bytes(host, port, path, (images * images_per_request)[:images_per_request], token)
    _first_request(base, images[0], token)
    result = LoadResult()
    before = _health(base)
    result.rss_mb_start = before.get("rss_mb")

    async def sample_memory(deadline: float):
        while True:  # a sample at the start, then every 2 s until the deadline
            rss = (await asyncio.to_thread(_health, base)).get("rss_mb")
            if rss is not None:
                result.rss_mb_samples.append(rss)
            if time.perf_counter() + 2.0 >= deadline:
                return
            await asyncio.sleep(2.0)

    async def main():
        deadline = time.perf_counter() + seconds
        budget = [max_requests]
        t0 = time.perf_counter()
        sampler = asyncio.create_task(sample_memory(deadline))
        await asyncio.gather(*(_client(host, port, payload, images_per_request, deadline, budget, result)
                               for _ in range(clients)))
        result.seconds = time.perf_counter() - t0
        await sampler

    asyncio.run(main())
    after = _health(base)
    result.rss_mb_end = after.get("rss_mb")
    if "batcher" in before and "batcher" in after:
        result.forward_passes = after["batcher"]["forward_passes"] - before["batcher"]["forward_passes"]
    return result.summary()
