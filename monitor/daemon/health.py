"""Per-deployment health: a pure state machine fed confirmed CanaryResults, time passed in.

A result is *good* (ok, within latency_slo and ttft_slo), *slow* (ok, above an SLO), *throttled*
(rate_limited) or a *failure* (any other kind); `cancelled` is ignored entirely. Counters: a good
result resets the failure streak and extends the ok and good streaks; slow extends ok only; a
failure extends the failure streak; a 429 resets all three (it proves the service answers).
The state a result is judged from (basis) is the current one, except that an unknown deployment
with an open incident is judged from that incident's state (silence is not recovery).

    result     basis unknown/healthy   basis degraded            basis down/throttled
    good       healthy                 healthy if good >= ST,    healthy if good >= ST, degraded
                                       else stays                if ok >= ST, else stays
    slow       degraded                degraded                  degraded if ok >= ST, else stays
    throttled  throttled               throttled                 throttled (down -> throttled too)
    failure    down if fails >= FT, else degraded (from unknown/healthy) or stays

Silence: no result for 3 * interval + timeout (from expect(), else the settings last observed) moves
any known state to unknown; open incidents stay open and counters are kept. Entering down or
throttled opens an incident carrying the ids of the first failure of the streak; leaving that state
on a result closes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from monitor.canary.results import CanaryResult, FailureKind
from monitor.config import CheckSettings
from monitor.config.durations import format_duration

Key = tuple[str, str]  # (resource, deployment)
SNAPSHOT_VERSION = 1
_DEFAULTS = CheckSettings()
_T = TypeVar("_T")


class State(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    THROTTLED = "throttled"
    DOWN = "down"


_INCIDENT_STATES = (State.DOWN, State.THROTTLED)


@dataclass(frozen=True, slots=True)
class Failure:
    """A non-ok result (429 included) as remembered: what, why, which request, when observed."""

    kind: FailureKind
    hint: str
    request_id: str | None
    apim_request_id: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Incident:
    """A stretch of down or throttled; `started_at` is when its first failure was observed."""

    key: Key
    state: State  # State.DOWN or State.THROTTLED
    started_at: datetime
    kind: FailureKind  # of the first failure
    hint: str
    request_id: str | None
    apim_request_id: str | None
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    key: Key
    previous: State
    new: State
    at: datetime
    previous_since: datetime | None  # None: never observed before
    previous_duration_s: float | None
    kind: FailureKind | None  # of the result that caused it; None for silence
    hint: str | None
    request_id: str | None
    apim_request_id: str | None
    reason: str

    def log_fields(self) -> dict[str, object]:
        return {"event": "state_change", "resource": self.key[0], "deployment": self.key[1],
                "from": self.previous.value, "to": self.new.value,
                "kind": self.kind.value if self.kind else None, "hint": self.hint,
                "request_id": self.request_id, "apim_request_id": self.apim_request_id,
                "previous_duration_s": self.previous_duration_s, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Change:
    """What one result did: always a transition, and maybe an incident opened and/or closed."""

    transition: Transition
    opened: Incident | None = None
    closed: Incident | None = None


@dataclass(frozen=True, slots=True)
class StateView:
    state: State
    since: datetime | None
    last_result_at: datetime | None
    consecutive_failures: int
    consecutive_ok: int
    consecutive_good: int
    last_failure: Failure | None
    incident: Incident | None


@dataclass(slots=True)
class _Entry:
    state: State = State.UNKNOWN
    since: datetime | None = None
    last_result_at: datetime | None = None
    fails: int = 0
    oks: int = 0
    goods: int = 0
    first_failure: Failure | None = None
    last_failure: Failure | None = None
    incident: Incident | None = None
    interval_s: float | None = None
    timeout_s: float | None = None


def _plural(n: int, what: str) -> str:
    return f"{n} consecutive {what}s" if n != 1 else f"1 {what}"


def _slow(result: CanaryResult, s: CheckSettings) -> str | None:
    """Why an ok result is slow, or None when it is within its SLOs (missing timings pass)."""
    t = result.timings
    if t.total_s is not None and t.total_s > s.latency_slo:
        return f"latency {t.total_s:.1f}s above SLO {format_duration(s.latency_slo)}"
    if s.ttft_slo is not None and t.ttft_s is not None and t.ttft_s > s.ttft_slo:
        return f"ttft {t.ttft_s:.1f}s above SLO {format_duration(s.ttft_slo)}"
    return None


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("health times must be timezone-aware (UTC)")
    return now


def _judge(e: _Entry, result: CanaryResult, s: CheckSettings,
           now: datetime) -> tuple[State, str, Failure | None]:
    """Update the counters of ``e`` for one result; the state it leads to, why, and the failure seen."""
    basis = e.incident.state if e.state is State.UNKNOWN and e.incident else e.state
    ft, st = s.failure_threshold, s.success_threshold
    if not result.ok:
        seen = Failure(result.kind, result.verdict.hint, result.request_id, result.apim_request_id, now)
        e.last_failure = seen
        if result.kind is FailureKind.RATE_LIMITED:
            e.fails = e.oks = e.goods = 0
            e.first_failure = None
            return State.THROTTLED, "rate limited: quota exhausted", seen
        e.fails, e.oks, e.goods = e.fails + 1, 0, 0
        e.first_failure = e.first_failure if e.fails > 1 and e.first_failure else seen
        if e.fails >= ft:
            return State.DOWN, _plural(e.fails, "failure"), seen
        target = State.DEGRADED if basis in (State.UNKNOWN, State.HEALTHY) else basis
        why = "intermittent failure" if target is State.DEGRADED else f"still {basis}"
        return target, f"{why}: {result.kind} ({e.fails} of {ft} failures before down)", seen
    slow = _slow(result, s)
    e.fails, e.first_failure = 0, None
    e.oks, e.goods = e.oks + 1, (0 if slow else e.goods + 1)
    if basis in (State.UNKNOWN, State.HEALTHY):
        return (State.DEGRADED, slow, None) if slow else (State.HEALTHY, "ok within SLO", None)
    if e.goods >= st:
        return State.HEALTHY, _plural(e.goods, "good result"), None
    if e.oks >= st or basis is State.DEGRADED:
        return State.DEGRADED, slow or f"{_plural(e.oks, 'ok result')}, {e.goods} of {st} good needed", None
    return basis, f"still {basis}: {e.oks} of {st} ok results needed to recover", None


class HealthTracker:
    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}

    def expect(self, key: Key, interval_s: float, timeout_s: float) -> None:
        """Set how often results should arrive; wins over the settings seen by observe."""
        entry = self._entries.setdefault(key, _Entry())
        entry.interval_s, entry.timeout_s = interval_s, timeout_s

    def forget(self, key: Key, now: datetime) -> Incident | None:
        """Drop a deployment removed from the config; its open incident comes back closed."""
        _aware(now)
        entry = self._entries.pop(key, None)
        return None if entry is None or entry.incident is None else replace(entry.incident, ended_at=now)

    def observe(self, result: CanaryResult, settings: CheckSettings, now: datetime) -> Change | None:
        """Feed one confirmed result; a Change when the state moved, else None."""
        _aware(now)
        if result.kind is FailureKind.CANCELLED:
            return None
        key = (result.resource, result.deployment)
        e = self._entries.setdefault(key, _Entry())
        if e.interval_s is None or e.timeout_s is None:
            e.interval_s, e.timeout_s = settings.interval, settings.timeout
        e.last_result_at = now
        target, reason, seen = _judge(e, result, settings, now)
        if target is e.state:
            return None
        transition = self._shift(key, e, target, now, reason, result)
        closed = opened = None
        if e.incident is not None and e.incident.state is not target:
            closed, e.incident = replace(e.incident, ended_at=now), None
        if target in _INCIDENT_STATES and e.incident is None and seen is not None:
            first = (e.first_failure or seen) if target is State.DOWN else seen
            opened = e.incident = Incident(key, target, first.at, first.kind, first.hint,
                                           first.request_id, first.apim_request_id)
        return Change(transition, opened, closed)

    def check_silence(self, now: datetime) -> list[Transition]:
        """Move to unknown every deployment whose last result is older than 3 * interval + timeout."""
        _aware(now)
        out = []
        for key, e in self._entries.items():
            if e.state is State.UNKNOWN or e.last_result_at is None:
                continue
            interval = e.interval_s if e.interval_s is not None else _DEFAULTS.interval
            timeout = e.timeout_s if e.timeout_s is not None else _DEFAULTS.timeout
            age = (now - e.last_result_at).total_seconds()
            if age > 3 * interval + timeout:
                reason = f"no result for {format_duration(round(age))}"
                out.append(self._shift(key, e, State.UNKNOWN, now, reason, None))
        return out

    @staticmethod
    def _shift(key: Key, e: _Entry, to: State, now: datetime, reason: str,
               result: CanaryResult | None) -> Transition:
        duration = None if e.since is None else (now - e.since).total_seconds()
        kind = None if result is None else result.kind
        t = Transition(key, e.state, to, now, e.since, duration, kind,
                       None if result is None else result.verdict.hint,
                       None if result is None else result.request_id,
                       None if result is None else result.apim_request_id, reason)
        e.state, e.since = to, now
        return t

    def states(self) -> dict[Key, StateView]:
        return {k: StateView(e.state, e.since, e.last_result_at, e.fails, e.oks, e.goods,
                             e.last_failure, e.incident) for k, e in self._entries.items()}

    def open_incidents(self) -> list[Incident]:
        return [e.incident for e in self._entries.values() if e.incident is not None]

    def reconcile(self, open_in_store: list[Incident]) -> None:
        """Make the open incidents those the store has open. The store is written at once, the snapshot
        every 15 s: after a crash, an incident opened since the last snapshot is adopted (with the
        state it stands for), and one closed since then is dropped."""
        stored = {i.key: i for i in open_in_store}
        for key, e in self._entries.items():
            if e.incident is not None and key not in stored:
                e.incident = None
        for key, incident in stored.items():
            e = self._entries.setdefault(key, _Entry())
            if e.incident is None or e.incident.state is not incident.state:
                e.incident = incident
                e.state, e.since = incident.state, incident.started_at

    # --- persistence: plain JSON types; restore drops what it cannot read, never raises ----------

    def snapshot(self) -> dict[str, Any]:
        return {"version": SNAPSHOT_VERSION,
                "deployments": [_dump(k, e) for k, e in self._entries.items()]}

    @classmethod
    def restore(cls, data: object) -> HealthTracker:
        tracker = cls()
        items = data.get("deployments") if isinstance(data, Mapping) else None
        for item in items if isinstance(items, list) else []:
            try:
                key, entry = _load(item)
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            tracker._entries[key] = entry
        return tracker


def _ts(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _plain(obj: Failure | Incident | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in ("key", "ended_at")}
    return {k: _ts(v) if isinstance(v, datetime) else v.value if isinstance(v, StrEnum) else v
            for k, v in values.items()}


def _dump(key: Key, e: _Entry) -> dict[str, Any]:
    return {"resource": key[0], "deployment": key[1], "state": e.state.value, "since": _ts(e.since),
            "last_result_at": _ts(e.last_result_at), "consecutive_failures": e.fails,
            "consecutive_ok": e.oks, "consecutive_good": e.goods, "first_failure": _plain(e.first_failure),
            "last_failure": _plain(e.last_failure), "incident": _plain(e.incident),
            "interval_s": e.interval_s, "timeout_s": e.timeout_s}


def _get(d: Mapping[str, Any], k: str, kind: type[_T]) -> _T | None:
    v = d.get(k)
    if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
        raise TypeError(k)
    return v


def _req(v: _T | None) -> _T:
    if v is None:
        raise ValueError("missing value")
    return v


def _str(d: Mapping[str, Any], k: str) -> str:
    return _req(_get(d, k, str))


def _when(d: Mapping[str, Any], k: str) -> datetime | None:
    text = _get(d, k, str)
    at = None if text is None else datetime.fromisoformat(text)
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=UTC)


def _count(d: Mapping[str, Any], k: str) -> int:
    v = _get(d, k, int) or 0
    if v < 0:
        raise ValueError(k)
    return v


def _seconds(d: Mapping[str, Any], k: str) -> float | None:
    v = d.get(k)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                          or v <= 0):
        raise ValueError(k)
    return None if v is None else float(v)


def _ids(d: Mapping[str, Any]) -> tuple[FailureKind, str, str | None, str | None]:
    return (FailureKind(_str(d, "kind")), _get(d, "hint", str) or "", _get(d, "request_id", str),
            _get(d, "apim_request_id", str))


def _load(item: object) -> tuple[Key, _Entry]:
    if not isinstance(item, Mapping):
        raise TypeError("expected a mapping")
    key = (_str(item, "resource"), _str(item, "deployment"))
    sub = {k: _get(item, k, dict) for k in ("first_failure", "last_failure", "incident")}
    failures = [None if f is None else Failure(*_ids(f), _req(_when(f, "at")))
                for f in (sub["first_failure"], sub["last_failure"])]
    incident = None
    if (i := sub["incident"]) is not None:
        if State(_str(i, "state")) not in _INCIDENT_STATES:
            raise ValueError("incident state")
        incident = Incident(key, State(i["state"]), _req(_when(i, "started_at")), *_ids(i))
    return key, _Entry(State(_str(item, "state")), _when(item, "since"), _when(item, "last_result_at"),
                       _count(item, "consecutive_failures"), _count(item, "consecutive_ok"),
                       _count(item, "consecutive_good"), failures[0], failures[1], incident,
                       _seconds(item, "interval_s"), _seconds(item, "timeout_s"))
