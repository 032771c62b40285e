"""Who may call the service, and how many at once: one ASGI middleware in front of the app.

    Host       the Host header must name this server (loopback names by default): a web page the
               user visits cannot reach 127.0.0.1 through a rebound DNS name
    Origin     a browser request from another site (its Origin header) is refused unless that
               origin was allowed with --cors-origin: a page cannot POST images to the service
    token      with --token (or $CIFAR10CNN_TOKEN), every /v1/ call needs `Authorization: Bearer
               TOKEN`; the page, /healthz and the API docs stay open (they hold no data)
    in flight  past `max_inflight` /v1/ requests being served, 503 + Retry-After at once

Every refusal is the service's JSON error {"error": {"status", "message"}}.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Access:
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_NAMES))  # "*" = any
    token: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_inflight: int = 64

    def describe(self) -> dict:
        return {"allowed_hosts": self.allowed_hosts, "token_required": bool(self.token),
                "cors_origins": self.cors_origins, "max_inflight": self.max_inflight}


def host_name(value: str) -> str:
    """'127.0.0.1:8000' → '127.0.0.1', '[::1]:8000' → '::1', 'Example.org' → 'example.org'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The service's one error shape: {"error": {"status", "message"}}."""
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware applying `Access` (see the module docstring)."""

    def __init__(self, app, access: Access) -> None:
        self.app, self.access, self.inflight = app, access, 0

    def _problem(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                   if k in (b"host", b"origin", b"authorization")}
        host = host_name(headers.get("host", ""))
        if "*" not in self.access.allowed_hosts and host not in self.access.allowed_hosts:
            return 421, (f"Host {host or '(none)'!r} is not served here (allowed: "
                         f"{', '.join(self.access.allowed_hosts)}; see serve --allow-host)")
        origin = headers.get("origin")
        same_origin = origin is not None and origin.split("://", 1)[-1].lower() == headers.get("host", "").lower()
        if origin is not None and not same_origin and origin not in self.access.cors_origins:
            return 403, f"cross-origin request from {origin} refused (see serve --cors-origin)"
        if self.access.token and scope["path"].startswith("/v1/"):
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.access.token}".encode()):
                return 401, "missing or wrong bearer token (Authorization: Bearer TOKEN)"
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self._problem(scope)
        if problem:
            status, message = problem
            response = error_response(status, message, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
            return await response(scope, receive, send)
        if not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        if self.inflight >= self.access.max_inflight:
            response = error_response(503, f"server busy: {self.inflight} requests in flight (limit "
                                           f"{self.access.max_inflight}); retry shortly", {"Retry-After": "1"})
            return await response(scope, receive, send)
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
