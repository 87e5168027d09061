"""The emulator's mutable state: deployments, fault draws, token buckets, issued tokens, the log.

The HTTP app runs in one thread and tests or the runner read and change the state from another, so
every mutation happens under one lock (held for microseconds, never across an await).
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import background, wire
from .arm import Arm, ArmState
from .scenario import Deployment, Fault, Latency, Scenario

LOG_LIMIT = 200_000
AUDIENCES = ("https://cognitiveservices.azure.com", "https://ai.azure.com")
ARM_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")


@dataclass
class LogEntry:
    """What the emulator did for one request (server-side timestamps, epoch seconds)."""

    seq: int
    method: str
    path: str
    t_arrival: float
    deployment: str | None = None
    auth: str | None = None           # x-api-key | api-key | bearer, once accepted
    fault: str | None = None          # the injected fault, "rate_limit_bucket" for a real 429
    stream: bool = False
    status: int | None = None         # None: no response head was sent (hang, reset)
    outcome: str = "complete"         # complete | hang | reset | disconnected
    request_id: str = ""
    apim_request_id: str = ""
    t_first_byte: float | None = None
    t_first_token: float | None = None
    t_last_byte: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    origin: str = "client"            # client (served over HTTP) | background (synthesised real traffic)
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_s"] = None if self.t_last_byte is None else self.t_last_byte - self.t_arrival
        out["ttft_s"] = None if self.t_first_token is None else self.t_first_token - self.t_arrival
        return out


@dataclass
class _Bucket:
    """A token bucket holding one minute's worth of requests."""

    per_minute: float
    tokens: float
    last: float

    def take(self, now: float) -> float | None:
        """None when a request may pass; else the seconds until one may."""
        rate = self.per_minute / 60.0
        self.tokens = min(max(1.0, self.per_minute), self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


@dataclass
class _Live:
    spec: Deployment
    since: float                       # fault windows count from here
    bucket: _Bucket | None = None


@dataclass
class _Token:
    expires_at: float
    audience: str


@dataclass
class Emulator:
    scenario: Scenario
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _deps: dict[str, _Live] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random)  # noqa: S311
    _log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _tokens: dict[str, _Token] = field(default_factory=dict)
    loaded_at: float = 0.0  # epoch seconds when the scenario was loaded: fault windows count from here
    wall: Callable[[], float] = time.time  # the log's clock (epoch seconds)
    _background_until: float = 0.0  # live background traffic is in the log up to here
    _throttle_left: int = 0  # metrics calls still to be answered 429
    _generated: set[tuple[str, float, int]] = field(default_factory=set)  # background grid points logged
    arm: ArmState = field(default_factory=lambda: ArmState(Arm()))
    _from_arm: set[str] = field(default_factory=set)  # data-plane deployments that follow the control plane

    def __post_init__(self) -> None:
        self.load(self.scenario)

    # -- scenario -------------------------------------------------------------------------------
    def load(self, scenario: Scenario) -> None:
        now = self.clock()
        self.loaded_at = time.time()
        with self._lock:
            self.scenario = scenario
            self._background_until = self.wall()
            self._throttle_left = scenario.azure.throttle
            self._rng = random.Random(scenario.seed)  # noqa: S311 - fault draws, not secrets
            self._deps = {d.name: self._live(d, now) for d in scenario.deployments}
            self._from_arm = set()
        self.arm.load(scenario.arm)
        self.sync_arm()

    def sync_arm(self) -> None:
        """The data plane follows the control plane: every Anthropic deployment ARM lists answers canaries
        (unless the scenario declares it itself); one ARM no longer lists stops answering (404)."""
        listed = {d.name: d for d in self.arm.deployed() if d.format == "Anthropic"}
        now = self.clock()
        with self._lock:
            for name in [n for n in self._from_arm if n not in listed]:
                self._deps.pop(name, None)
                self._from_arm.discard(name)
            for name, d in listed.items():
                if name not in self._deps:
                    spec = Deployment(name=name, model=f"{d.model}-{d.version}", latency=Latency(base=0.005))
                    self._deps[name] = self._live(spec, now)
                    self._from_arm.add(name)

    def current(self) -> Scenario:
        with self._lock:
            deps = tuple(live.spec for live in self._deps.values())
        return self.scenario.model_copy(update={"deployments": deps, "arm": self.arm.arm})

    def put_deployment(self, spec: Deployment) -> None:
        now = self.clock()
        with self._lock:
            self._deps[spec.name] = self._live(spec, now)

    def remove_deployment(self, name: str) -> bool:
        with self._lock:
            return self._deps.pop(name, None) is not None

    def set_faults(self, name: str, faults: Sequence[Fault]) -> bool:
        """Replace a deployment's faults; their windows count from now. False for an unknown name."""
        now = self.clock()
        with self._lock:
            live = self._deps.get(name)
            if live is None:
                return False
            live.spec = live.spec.model_copy(update={"faults": tuple(faults)})
            live.since = now
            return True

    @staticmethod
    def _live(spec: Deployment, now: float) -> _Live:
        bucket = None
        if spec.rate_limit is not None:
            rpm = spec.rate_limit.requests_per_minute
            bucket = _Bucket(rpm, max(1.0, rpm), now)
        return _Live(spec, now, bucket)

    # -- per request ------------------------------------------------------------------------------
    def deployment(self, name: str) -> Deployment | None:
        with self._lock:
            live = self._deps.get(name)
            return live.spec if live else None

    def admit(self, name: str) -> float | None:
        """The token bucket's verdict: None to pass, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            live = self._deps.get(name)
            return live.bucket.take(now) if live and live.bucket else None

    def pick_fault(self, name: str) -> Fault | None:
        """The first fault whose window is open and whose rate draw hits."""
        now = self.clock()
        with self._lock:
            live = self._deps.get(name)
            if live is None:
                return None
            for fault in live.spec.faults:
                if fault.window.contains(now - live.since) and (
                        fault.rate >= 1.0 or self._rng.random() < fault.rate):
                    return fault
        return None

    def jitter(self, spread: float) -> float:
        with self._lock:
            return self._rng.uniform(0.0, spread) if spread > 0 else 0.0

    # -- log ----------------------------------------------------------------------------------------
    def begin(self, method: str, path: str) -> LogEntry:
        return LogEntry(seq=next(self._seq), method=method, path=path, t_arrival=time.time(),
                        request_id=wire.request_id(), apim_request_id=wire.apim_request_id())

    def finish(self, entry: LogEntry) -> None:
        with self._lock:
            self._log.append(entry)

    def log(self, since: int = 0) -> list[dict[str, Any]]:
        """Finished requests in the order they finished; ``since`` skips those with seq <= since."""
        return [e.as_dict() for e in self.entries() if e.seq > since]

    def entries(self) -> list[LogEntry]:
        """Every logged request, live background traffic caught up to now first."""
        self.background(None, None)
        with self._lock:
            return list(self._log)

    # -- background traffic (real callers besides the canaries) --------------------------------------
    def background(self, start: float | None, end: float | None) -> int:
        """Log the background traffic of [start, end) (epoch seconds), or with None the live traffic
        since the last catch-up; returns how many requests were added."""
        with self._lock:
            if start is None or end is None:
                start, end = self._background_until, self.wall()
                self._background_until = max(self._background_until, end)
            specs = [(live.spec.name, live.spec.background) for live in self._deps.values()
                     if live.spec.background is not None]
            added = 0
            for name, spec in specs:
                assert spec is not None  # noqa: S101 - filtered above
                for r in background.requests(name, spec, start, end):
                    if (name, spec.per_minute, r.k) in self._generated:
                        continue
                    self._generated.add((name, spec.per_minute, r.k))
                    self._log.append(LogEntry(
                        seq=next(self._seq), method="POST", path=background.PATH, t_arrival=r.at,
                        deployment=name, auth="background", stream=r.stream, status=r.status,
                        request_id=wire.request_id(), apim_request_id=wire.apim_request_id(),
                        t_first_byte=r.at + (r.ttft_s or r.total_s), t_last_byte=r.at + r.total_s,
                        t_first_token=None if r.ttft_s is None else r.at + r.ttft_s,
                        input_tokens=r.input_tokens, output_tokens=r.output_tokens, origin="background",
                        cache_read_tokens=r.cache_read_tokens, cache_write_tokens=r.cache_write_tokens))
                    added += 1
            return added

    # -- Azure's metrics API ----------------------------------------------------------------------
    def take_throttle(self) -> bool:
        """True when this metrics call is one of those to be throttled."""
        with self._lock:
            if self._throttle_left > 0:
                self._throttle_left -= 1
                return True
            return False

    def set_azure(self, **changes: Any) -> None:
        with self._lock:
            self.scenario = self.scenario.model_copy(
                update={"azure": self.scenario.azure.model_copy(update=changes)})
            if "throttle" in changes:
                self._throttle_left = int(changes["throttle"])

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- Entra tokens ------------------------------------------------------------------------------
    def issue_token(self, resource: str) -> tuple[str, int]:
        token = "emu-entra-" + secrets.token_urlsafe(24)
        expires_at = time.time() + self.scenario.identity.token_lifetime
        audience = resource.removesuffix("/.default").rstrip("/")
        with self._lock:
            self._tokens[token] = _Token(expires_at, audience)
        return token, int(expires_at)

    def token_valid(self, token: str, audiences: Sequence[str] = AUDIENCES) -> bool:
        with self._lock:
            found = self._tokens.get(token)
        return found is not None and found.audience in audiences and time.time() < found.expires_at

    def token_audience(self, token: str) -> str | None:
        """The audience a valid (issued, unexpired) token was issued for; None otherwise."""
        with self._lock:
            found = self._tokens.get(token)
        return found.audience if found is not None and time.time() < found.expires_at else None

    def expire_tokens(self) -> int:
        """Expire every issued token now (as if an hour had passed); returns how many."""
        with self._lock:
            for t in self._tokens.values():
                t.expires_at = 0.0
            return len(self._tokens)
