"""An HTTPS stand-in for the Log Analytics query API (POST /v1/workspaces/{id}/query) on 127.0.0.1.

It recognises which of the project's KQL files a request runs (the bound query ends with the file's
text), reads `_start`, `_end` and `_tz` from the `let` statements, and answers with the table that KQL
would return over a seeded history, computed here directly from the seeded canaries: a second,
independent implementation of the query semantics (not the store's rollup code).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

from monitor.canary.pricing import cost_usd
from monitor.canary.results import CanaryResult
from monitor.reports.loganalytics import QUERIES, kql_text

from .loopback import serve_http
from .report_seed import Seed

Table = tuple[list[tuple[str, str]], list[list[Any]]]  # (column name, type), rows


class FakeCredential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken("fake-la-token-5e1d", int(datetime.now(UTC).timestamp()) + 3600)


class FakeLogAnalytics:
    def __init__(self, seed: Seed, tls: tuple[str, str]) -> None:
        self.seed = seed
        self.tls = tls
        self.requests: list[dict[str, Any]] = []
        self.status = 200  # e.g. 429 to throttle every query
        self.partial: set[str] = set()  # query names answered with a partial error
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> FakeLogAnalytics:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                name = fake.which(body["query"])
                fake.requests.append({"path": self.path, "name": name, "body": body,
                                      "authorization": self.headers.get("authorization", "")})
                status, answer = fake.answer(name, body["query"])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = serve_http(Handler, self.tls)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- answering -------------------------------------------------------------------------------

    @staticmethod
    def which(query: str) -> str | None:
        for name in QUERIES:
            if query.rstrip().endswith(kql_text(name).rstrip()):
                return name
        return None

    def answer(self, name: str | None, query: str) -> tuple[int, dict[str, Any]]:
        if self.status != 200:
            code = "ThrottledError" if self.status == 429 else "BadArgumentError"
            return self.status, {"error": {"code": code, "message": f"refused with {self.status}"}}
        if name is None:
            return 400, {"error": {"code": "BadArgumentError", "message": "unknown query",
                                   "innererror": {"code": "SyntaxError", "message": "not a project query"}}}
        start, end, tz = _params(query)
        columns, rows = getattr(self, f"_{name}")(start, end, ZoneInfo(tz))
        table = {"name": "PrimaryResult", "columns": [{"name": c, "type": t} for c, t in columns],
                 "rows": rows}
        out: dict[str, Any] = {"tables": [table]}
        if name in self.partial:
            out["error"] = {"code": "PartialError", "message": "There were some errors when processing your "
                            "query.", "details": [{"code": "EngineError", "message": "result truncated"}]}
        return 200, out

    def _canaries(self, start: datetime, end: datetime) -> Iterator[tuple[CanaryResult, float | None]]:
        for r in self.seed.results:
            if start <= r.started_at < end:
                yield r, (cost_usd(r.model, r.usage) if r.usage else None)

    def _hours(self, start: datetime, end: datetime, tz: ZoneInfo) -> Table:
        groups: dict[tuple[datetime, str, str], dict[str, Any]] = {}
        for r, cost in self._canaries(start, end):
            hour = r.started_at.replace(minute=0, second=0, microsecond=0)
            g = groups.setdefault((hour, r.resource, r.deployment), {
                "model": r.model, "canaries": 0, "ok": 0, "rechecks": 0, "in": 0, "out": 0, "cost": 0.0,
                "tps": 0.0, "tps_n": 0})
            scheduled = r.attempt == 0 and r.kind.value != "cancelled"
            g["canaries"] += scheduled
            g["ok"] += scheduled and r.ok
            g["rechecks"] += r.attempt > 0
            g["in"] += r.usage.input_tokens if r.usage else 0
            g["out"] += r.usage.output_tokens if r.usage else 0
            g["cost"] += cost or 0.0
            t = r.timings
            if (scheduled and r.ok and r.usage and r.usage.output_tokens > 1 and t.total_s
                    and t.ttft_s is not None and t.total_s > t.ttft_s):
                g["tps"] += (r.usage.output_tokens - 1) / (t.total_s - t.ttft_s)
                g["tps_n"] += 1
        columns = [("hour", "datetime"), ("resource", "string"), ("deployment", "string"),
                   ("model", "string"), ("canaries", "long"), ("ok", "long"), ("rechecks", "long"),
                   ("input_tokens", "long"), ("output_tokens", "long"), ("cost_usd", "real"),
                   ("tps_sum", "real"), ("tps_n", "long")]
        rows = [[_iso(h), res, dep, g["model"], g["canaries"], g["ok"], g["rechecks"], g["in"], g["out"],
                 g["cost"], g["tps"], g["tps_n"]] for (h, res, dep), g in sorted(groups.items())]
        return columns, rows

    def _kinds(self, start: datetime, end: datetime, tz: ZoneInfo) -> Table:
        groups: dict[tuple[str, str, str, str], list[Any]] = {}
        for r, _ in self._canaries(start, end):
            if r.attempt != 0 or r.ok or r.kind.value == "cancelled":
                continue
            key = (_day(r.started_at, tz), r.resource, r.deployment, r.kind.value)
            g = groups.setdefault(key, [0, "", "", datetime(1970, 1, 1, tzinfo=UTC)])
            g[0] += 1
            at = r.started_at if (r.request_id or r.apim_request_id) else datetime(1970, 1, 1, tzinfo=UTC)
            if at > g[3] or g[0] == 1:
                g[1], g[2], g[3] = r.request_id or "", r.apim_request_id or "", at
        columns = [("day", "string"), ("resource", "string"), ("deployment", "string"), ("outcome", "string"),
                   ("count", "long"), ("request_id", "string"), ("apim_request_id", "string"),
                   ("example_at", "datetime")]
        return columns, [[*k, g[0], g[1], g[2], _iso(g[3])] for k, g in sorted(groups.items())]

    def _hists(self, start: datetime, end: datetime, tz: ZoneInfo) -> Table:
        counts: dict[tuple[str, str, str, str, int], int] = defaultdict(int)
        for r, _ in self._canaries(start, end):
            if r.attempt != 0 or not r.ok:
                continue
            day = _day(r.started_at, tz)
            for metric, seconds in (("latency", r.timings.total_s), ("ttft", r.timings.ttft_s)):
                if seconds is not None:
                    b = math.floor(math.log(max(seconds * 1000.0, 1.0)) / math.log(1.05))
                    counts[(day, r.resource, r.deployment, metric, b)] += 1
        columns = [("day", "string"), ("resource", "string"), ("deployment", "string"),
                   ("metric", "string"), ("bucket", "int"), ("count", "long")]
        return columns, [[*k, n] for k, n in sorted(counts.items())]

    def _transitions(self, start: datetime, end: datetime, tz: ZoneInfo) -> Table:
        inside = [t for t in self.seed.transitions if start <= t.at < end]
        last: dict[tuple[str, str], Any] = {}
        for t in self.seed.transitions:
            if start - timedelta(days=400) <= t.at < start:
                key = (t.resource, t.deployment)
                if key not in last or t.at > last[key].at:
                    last[key] = t
        chosen = sorted([*inside, *last.values()], key=lambda t: t.at)
        columns = [("at", "datetime"), ("resource", "string"), ("deployment", "string"),
                   ("from_state", "string"), ("to_state", "string"), ("cause", "string"), ("hint", "string"),
                   ("request_id", "string"), ("apim_request_id", "string")]
        return columns, [[_iso(t.at), t.resource, t.deployment, t.from_state, t.to_state, t.kind or "",
                          t.hint or "", t.request_id or "", t.apim_request_id or ""] for t in chosen]

    def _usage(self, start: datetime, end: datetime, tz: ZoneInfo) -> Table:
        columns = [("resource", "string"), ("requests", "real"), ("input_tokens", "real"),
                   ("output_tokens", "real")]
        return columns, [[name, *values] for name, values in sorted(self.seed.usage.items())]


_LET = re.compile(r'^let (_start|_end|_tz) = (?:datetime\(([^)]*)\)|"([^"]*)");$', re.M)


def _params(query: str) -> tuple[datetime, datetime, str]:
    found = {m.group(1): m.group(2) or m.group(3) for m in _LET.finditer(query)}
    return (datetime.fromisoformat(found["_start"].replace("Z", "+00:00")),
            datetime.fromisoformat(found["_end"].replace("Z", "+00:00")), found["_tz"])


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).date().isoformat()


@contextmanager
def fake_log_analytics(seed: Seed, tls: tuple[str, str]) -> Iterator[FakeLogAnalytics]:
    fake = FakeLogAnalytics(seed, tls).start()
    try:
        yield fake
    finally:
        fake.stop()
