"""A stand-in for Application Insights ingestion on 127.0.0.1: accepts POST .../v2.1/track like Breeze
(JSON array or newline-delimited JSON, optionally gzipped), keeps every envelope, and can be told to
answer with an error status or to stop listening (an outage) and come back on the same port."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .loopback import serve_http


class CaptureServer:
    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # path, headers, status answered, item count
        self.status = 200
        self.tls = tls
        self.port = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                items = _parse(body) if self.path.endswith("/track") else []  # OTLP bodies are protobuf
                status = capture.status
                with capture._changed:
                    capture.requests.append({"path": self.path, "headers": dict(self.headers),
                                             "status": status, "items": len(items), "bytes": len(body)})
                    if status == 200 and self.path.endswith("/track"):
                        capture.envelopes.extend(items)
                    capture._changed.notify_all()
                answer = {"itemsReceived": len(items), "itemsAccepted": len(items) if status == 200 else 0,
                          "errors": []}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = serve_http(Handler, self.tls, self.port)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until start() again, on the same port)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connection_string(self) -> str:
        scheme = "https" if self.tls else "http"
        return (f"InstrumentationKey=00000000-0000-4000-8000-000000000001;"
                f"IngestionEndpoint={scheme}://127.0.0.1:{self.port}/")

    # --- what arrived ----------------------------------------------------------------------------

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.envelopes if e.get("data", {}).get("baseType") == base_type]

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> bool:
        """Block until predicate(self) is true (re-checked on every request) or timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)


def _parse(body: bytes) -> list[dict[str, Any]]:
    text = body.decode("utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


def base_data(envelope: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = envelope["data"]["baseData"]
    return data


@contextmanager
def capture_server(tls: tuple[str, str] | None = None) -> Iterator[CaptureServer]:
    server = CaptureServer(tls)
    with server:
        yield server
