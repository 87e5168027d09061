"""An HTTPS stand-in for the Azure Communication Services Email API on 127.0.0.1: checks the HMAC
signature the SDK sends with an access key, accepts POST /emails:send (202 + Operation-Location) and
answers the operation poll with Succeeded. `status` makes every send fail with that HTTP status."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .loopback import serve_http

KEY = base64.b64encode(b"acs-access-key-3c8e-secret").decode()


class FakeAcs:
    def __init__(self, tls: tuple[str, str]) -> None:
        self.tls = tls
        self.sent: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.status = 202
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def connection_string(self) -> str:
        return f"endpoint=https://127.0.0.1:{self.port}/;accesskey={KEY}"

    def start(self) -> FakeAcs:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, status: int, body: dict[str, Any],
                        headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _signed(self, body: bytes) -> bool:
                digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
                if self.headers.get("x-ms-content-sha256") != digest:
                    return False
                host = self.headers.get("host", "")
                signed = f"{self.command}\n{self.path}\n{self.headers.get('x-ms-date')};{host};{digest}"
                key = base64.b64decode(KEY)
                mac = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
                want = f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={mac}"
                return self.headers.get("authorization") == want

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if not self._signed(body):
                    fake.bad_signatures += 1
                    self._answer(401, {"error": {"code": "Denied", "message": "bad signature"}})
                    return
                if fake.status != 202:
                    refused = {"error": {"code": "Refused", "message": f"status {fake.status}"}}
                    self._answer(fake.status, refused)
                    return
                fake.sent.append(json.loads(body))
                op = f"op-{len(fake.sent)}"
                self._answer(202, {"id": op, "status": "Running"}, {
                    "operation-location": f"https://127.0.0.1:{fake.port}/emails/operations/{op}"
                                          "?api-version=2023-03-31", "retry-after": "0"})

            def do_GET(self) -> None:  # noqa: N802
                op = self.path.split("/")[-1].split("?")[0]
                self._answer(200, {"id": op, "status": "Succeeded"})

        self._httpd = serve_http(Handler, self.tls)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


@contextmanager
def fake_acs(tls: tuple[str, str]) -> Iterator[FakeAcs]:
    fake = FakeAcs(tls).start()
    try:
        yield fake
    finally:
        fake.stop()
