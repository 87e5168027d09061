"""What a report is built from, and the Protocol both sources (local store, Log Analytics) implement.

A source answers for a period with four tables of aggregates, never raw canaries: per deployment and
UTC hour (counts, tokens, cost), per deployment and local day (failures by kind, latency and TTFT
histograms), the state changes (plus the last one before the period), and, where known, the real
traffic of each Foundry resource. The same data gives the same tables from either source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from monitor.azure.metrics import ResourceMetrics


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) in UTC, with the local calendar days it covers (for per-day figures)."""

    start: datetime
    end: datetime
    timezone: str
    days: tuple[tuple[str, datetime], ...]  # (local date, its start in UTC), in order
    partial: bool = False  # ends now, not at a midnight: the last day is the current one so far

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: int  # epoch hours (UTC)
    resource: str
    deployment: str
    model: str
    canaries: int
    ok: int
    rechecks: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    tps_sum: float
    tps_n: int


@dataclass(frozen=True, slots=True)
class KindRow:
    day: str  # local date
    resource: str
    deployment: str
    kind: str
    count: int
    request_id: str | None
    apim_request_id: str | None
    example_at: float


# (local date, resource, deployment, metric "latency" | "ttft") -> {bucket: count}
Hists = dict[tuple[str, str, str, str], dict[int, int]]


@dataclass(frozen=True, slots=True)
class TransitionRow:
    resource: str
    deployment: str
    at: float  # epoch seconds
    from_state: str
    to_state: str
    kind: str | None
    hint: str | None
    request_id: str | None
    apim_request_id: str | None


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A Foundry resource's real traffic in the period (platform metrics), by Azure resource name."""

    resource: str  # Azure resource name, lower case
    requests: float | None
    input_tokens: float | None
    output_tokens: float | None


@dataclass(frozen=True, slots=True)
class SourceData:
    # counts per deployment and hour, or coarser (a row may sum a whole local day: its `hour` is then
    # any hour of that day, and `seen_hours` says which hours had canaries)
    hours: list[HourRow]
    kinds: list[KindRow]
    hists: Hists
    transitions: list[TransitionRow]  # in the period, plus the last one before it per deployment
    usage: list[UsageRow] | None  # None: this source cannot know real traffic
    notes: tuple[str, ...] = ()  # e.g. partial results
    seen_hours: dict[tuple[str, str], set[int]] | None = None  # None: the hours of `hours` rows with canaries
    platform: dict[str, ResourceMetrics] | None = None  # Azure's view by config resource name; None: not read


class ReportSource(Protocol):
    name: str

    def fetch(self, period: Period, *, summary_only: bool = False) -> SourceData:
        """The period's data; with summary_only, just what a comparison with the next period needs
        (hours and histograms: no kinds, transitions or usage)."""
