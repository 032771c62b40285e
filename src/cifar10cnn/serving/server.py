"""Running the app under uvicorn with limits a slow or hostile client cannot get around.

uvicorn times out idle keep-alive connections, but not a client that sends its request slowly: a
connection that never finishes its headers (slowloris) or its body is held forever, and
httptools does not bound header size. `deadline_protocol` adds both to uvicorn's own HTTP
protocol class (httptools or h11, whichever uvicorn would use):

    read_timeout       a request must arrive whole within this many seconds of the connection
                       (or of the previous response); otherwise 408 and the connection is closed
    max_header_bytes   request line + headers at most this size; otherwise 431 and closed

The time the app then takes is not limited by it. Slow connections closed are logged as one
line per second at most. Shutdown waits `graceful_seconds` for requests in progress.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("cifar10cnn.serve")
STATUS_TEXT = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}


class _Closed:
    """Counts connections closed for being slow and logs them, one line per second at most."""

    def __init__(self) -> None:
        self.count, self.pending, self.last = 0, 0, 0.0

    def add(self, reason: str) -> None:
        self.count += 1
        self.pending += 1
        now = time.monotonic()
        if now - self.last >= 1.0:
            log.warning("closed %d connection(s): %s", self.pending, reason)
            self.pending, self.last = 0, now


CLOSED = _Closed()


def _base_protocol() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def deadline_protocol(read_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with a whole-request read deadline and a header size bound."""
    base = _base_protocol()

    class DeadlineProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._header_bytes = 0
            self._deadline = self.loop.call_later(read_timeout, self._expired)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_headers() and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    CLOSED.add(f"request headers over {max_header_bytes:,} bytes")
                    self._close_with(431)

        def _expired(self) -> None:
            cycle = self.cycle
            if self.transport.is_closing() or (cycle is not None and not cycle.response_complete
                                               and not cycle.more_body):
                return  # the whole request is in: the app is working on it
            CLOSED.add(f"no complete request within {read_timeout:g} s")
            if self._waiting_for_headers():
                self._close_with(408)
            else:
                self.transport.close()  # mid-body: the app sees a disconnect

        def _close_with(self, status: int) -> None:
            body = STATUS_TEXT[status]
            self.transport.write(b"HTTP/1.1 " + body + b"\r\ncontent-type: text/plain\r\ncontent-length: "
                                 + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._deadline.cancel()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

    return DeadlineProtocol


def run_server(app, host: str, port: int, read_timeout: float = 30.0, max_header_bytes: int = 32 * 1024,
               max_connections: int = 2048, graceful_seconds: float = 10.0) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            http=deadline_protocol(read_timeout, max_header_bytes), timeout_keep_alive=5,
                            limit_concurrency=max_connections, timeout_graceful_shutdown=graceful_seconds,
                            h11_max_incomplete_event_size=max_header_bytes)
    uvicorn.Server(config).run()
