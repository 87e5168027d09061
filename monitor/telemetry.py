"""Telemetry: every canary to OpenTelemetry, and from there to Azure Monitor, Prometheus, OTLP, console.

The only module that imports opentelemetry. Its providers are private to one `OtelTelemetry` (never
the process-wide globals), so no library in the process is instrumented by accident and tests can
build several side by side. The Azure Monitor exporters are used directly rather than through
`configure_azure_monitor`, which would install globals, auto-instrument httpx (a second span per
canary) and run resource detectors that call the instance metadata service.

What goes where (README "Telemetry" lists every name):
- metrics: GenAI semconv histograms plus the monitor's own counters and gauges -> Prometheus `/metrics`
  (bucket boundaries from the semconv); to AppMetrics only the daemon's own unless
  `telemetry.azure.metrics: all` (Azure keeps only sum/count/min/max, and bills every point);
- one CLIENT span per canary, `chat {deployment}`, status ERROR unless ok -> AppDependencies for failed
  and slow canaries only unless `telemetry.azure.spans: all` (OTLP and console get every span);
- one availability record per canary (`microsoft.availability.*`) -> AppAvailabilityResults: all that
  the alert rules, the Azure dashboard and the Log Analytics report read;
- one custom event per state transition (`microsoft.custom_event.name`) -> AppEvents.

Metric attributes come from a fixed, bounded set: never a request id, a message or a secret.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarReservoir, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from prometheus_client import CollectorRegistry, generate_latest

from monitor.canary.results import CanaryResult, FailureKind
from monitor.daemon.health import Key, State, Transition

from . import __version__
from .config import Config
from .config import Telemetry as TelemetrySettings
from .errors import MonitorError
from .logs import event

log = logging.getLogger("monitor.telemetry")

SCOPE = "foundry-monitor"
PROVIDER = "anthropic"
OPERATION = "chat"
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
COST_BUCKETS = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0)
_ids = random.Random()  # noqa: S311 - canary ids (availability records, spans), not secrets
_SeriesAttrs = tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]
# deployment state as one numeric series (documented in README): absence of data is not "healthy"
STATE_CODES: dict[State, int] = {State.UNKNOWN: 0, State.HEALTHY: 1, State.DEGRADED: 2,
                                 State.THROTTLED: 3, State.DOWN: 4}
AVAILABILITY_TEST = "foundry-monitor canary"
EVENT_STATE_CHANGE = "foundry_monitor.state_change"
NOTEWORTHY = "foundry_monitor.slow"  # on the span of an ok canary slower than its objective
# SDK self-telemetry to Microsoft, remote control-plane polling, and SDK stats: off unless the user
# turns them on (each honours an explicit setting in the environment)
QUIET_ENV = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
             "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
             "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
             # the _OTELRESOURCE_ metric repeats what every envelope's tags already say
             "APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED": "true"}
CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"


@dataclass
class Exporters:
    """The span/metric/log exporters to send to, besides Prometheus which is always on.

    Each exporter has a span policy (`all`, `failures`: failed and slow canaries only, `none`) and a
    metric policy (`all`, `daemon`: the daemon's own low-cardinality metrics only, `none`): what Azure
    Monitor bills by volume need not get every series Prometheus keeps.
    """

    spans: list[SpanExporter] = field(default_factory=list)
    metrics: list[MetricExporter] = field(default_factory=list)
    logs: list[LogRecordExporter] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    span_policies: list[str] = field(default_factory=list)
    metric_policies: list[str] = field(default_factory=list)

    def add(self, name: str, spans: SpanExporter, metrics: MetricExporter, logs: LogRecordExporter, *,
            span_policy: str = "all", metric_policy: str = "all") -> None:
        self.spans.append(spans)
        self.metrics.append(metrics)
        self.logs.append(logs)
        self.names.append(name)
        self.span_policies.append(span_policy)
        self.metric_policies.append(metric_policy)


class OtelTelemetry:
    """Implements the daemon's Telemetry seam on private OpenTelemetry providers."""

    def __init__(self, exporters: Exporters | None = None, *, service_name: str = "foundry-monitor",
                 instance_id: str | None = None, location: str = "", export_interval_s: float = 60.0,
                 extra_readers: list[MetricReader] | None = None) -> None:
        exporters = exporters or Exporters()
        self.exporter_names = ["prometheus", *exporters.names]
        self.location = location
        self.resource = Resource.create({
            "service.name": service_name, "service.version": __version__,
            "service.instance.id": instance_id or str(uuid.uuid4()),
        })
        self.registry = CollectorRegistry(auto_describe=True)
        prometheus = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        readers: list[MetricReader] = [prometheus]
        self._unused: list[SpanExporter | MetricExporter] = []  # policy none: shut down with the rest
        daemon_readers: list[MetricReader] = []
        metric_policies = _policies(exporters.metric_policies, exporters.metrics)
        for exporter, policy in zip(exporters.metrics, metric_policies, strict=True):
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval_s * 1000)
            if policy == "all":
                readers.append(reader)
            elif policy == "daemon":
                daemon_readers.append(reader)
            else:
                self._unused.append(exporter)
        readers += extra_readers or []
        self.meter_provider = _meter_provider(readers, self.resource)
        # the daemon's own metrics (Entra tokens, reloads) for exporters that skip per-deployment series:
        # a provider of their own, so those readers never hold a series per deployment and kind
        self.daemon_meter_provider = (_meter_provider(daemon_readers, self.resource) if daemon_readers
                                      else None)
        self.tracer_provider = TracerProvider(sampler=ALWAYS_ON, resource=self.resource)
        self._spans_all = self._spans_noteworthy = False  # does anyone take every span / failed and slow ones
        for span_exporter, policy in zip(exporters.spans, _policies(exporters.span_policies, exporters.spans),
                                         strict=True):
            if policy == "none":
                self._unused.append(span_exporter)
                continue
            processor: SpanProcessor = BatchSpanProcessor(span_exporter)
            if policy == "failures":
                processor, self._spans_noteworthy = _Noteworthy(processor), True
            else:
                self._spans_all = True
            self.tracer_provider.add_span_processor(processor)
        self._logs_on = bool(exporters.logs)  # without a log exporter, availability records go nowhere
        self._slo: dict[Key, tuple[float, float | None]] = {}
        self.logger_provider = LoggerProvider(resource=self.resource)
        for log_exporter in exporters.logs:
            # the SDK's batch of 512 records a request: fewer, larger exports hand the interpreter to the
            # export thread less often than batches of 64 did (bench/daemon_bench.py --telemetry, 1,000
            # deployments at 10 s, idle machine: CPU 1.32 ms a canary against 1.38-1.51 with 64, latency
            # error p99 1.7 ms against 1.8-2.3)
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        self.tracer = self.tracer_provider.get_tracer(SCOPE, __version__)
        self.logger = self.logger_provider.get_logger(SCOPE, __version__)
        self._servers: dict[str, tuple[str, int]] = {}
        self._series_attrs: dict[tuple[Any, ...], _SeriesAttrs] = {}
        self._states: dict[Key, State] = {}
        self._last_reload_ok = 1
        self._lock = threading.Lock()
        self._bridges: list[tuple[logging.Logger, logging.Handler]] = []
        self._instruments()

    # --- instruments -----------------------------------------------------------------------------

    def _instruments(self) -> None:
        m = self.meter_provider.get_meter(SCOPE, __version__)
        d = self.daemon_meter_provider.get_meter(SCOPE, __version__) if self.daemon_meter_provider else None
        self.duration = m.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration (canary, "
            "request sent to last byte)", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.ttft = m.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to the first streamed content chunk of the canary",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.tokens = m.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used by the canary",
            # sum and count only: a canary's token counts are set by its prompt and max_tokens, so the
            # semconv's 14 buckets would say nothing and take 30 of a deployment's 70 lines in /metrics
            explicit_bucket_boundaries_advisory=())
        self.results = m.create_counter(
            "foundry_monitor.canary.results", unit="{canary}",
            description="Canaries by result kind (ok or the failure class)")
        self.cost = m.create_counter(
            "foundry_monitor.canary.cost", unit="{USD}",
            description="Estimated cost of the canaries, from the pricing table")
        # the daemon's own metrics: on every meter (few series, so every exporter may have them)
        meters = [m, d] if d is not None else [m]
        self.token_duration = _Fanout([meter.create_histogram(
            "foundry_monitor.entra.token.duration", unit="s",
            description="Time to obtain an Entra ID token (real acquisitions only, cache hits excluded)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS) for meter in meters])
        self.token_failures = _Fanout([meter.create_counter(
            "foundry_monitor.entra.token.failures", unit="{failure}",
            description="Canaries that could not obtain an Entra ID token") for meter in meters])
        self.reloads = _Fanout([meter.create_counter(
            "foundry_monitor.config.reloads", unit="{reload}", description="Config reloads by result")
            for meter in meters])
        for meter in meters:
            meter.create_observable_gauge(
                "foundry_monitor.config.last_reload_success", [self._observe_reload], unit="1",
                description="1 when the last config reload succeeded (or none was tried), 0 when it failed")
        m.create_observable_gauge(
            "foundry_monitor.deployment.state", [self._observe_states], unit="1",
            description="Health state per deployment: 0 unknown, 1 healthy, 2 degraded, 3 throttled, 4 down")

    def _observe_states(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            items = list(self._states.items())
        return [Observation(STATE_CODES[state], {
            "gen_ai.request.model": key[1], "foundry_monitor.resource": key[0],
            "foundry_monitor.location": self.location, "foundry_monitor.state": state.value})
            for key, state in items]

    def _observe_reload(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self._last_reload_ok, {"foundry_monitor.location": self.location})]

    # --- the Telemetry seam ----------------------------------------------------------------------

    def fleet(self, cfg: Config, states: Mapping[Key, State]) -> None:
        """The monitored deployments (at start and after each reload) with their current states."""
        servers = {}
        for res in cfg.resources:
            url = urlsplit(res.endpoint)
            servers[res.name] = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
        slo = {(res.name, dep.name): (s.latency_slo, s.ttft_slo) for res, dep, s in cfg.targets()}
        self._series_attrs.clear()  # server addresses may have changed
        with self._lock:
            self._servers = servers
            self._slo = slo
            self._states = {key: states.get(key, State.UNKNOWN) for key in
                            ((res.name, dep.name) for res, dep, _ in cfg.targets())}

    def record(self, r: CanaryResult, cost: float | None) -> None:
        attrs, input_attrs, output_attrs, result_attrs = self._series(r)
        t = r.timings
        if t.total_s is not None:
            self.duration.record(t.total_s, attrs)
        if t.ttft_s is not None:
            self.ttft.record(t.ttft_s, attrs)
        if r.usage is not None:
            self.tokens.record(r.usage.input_tokens, input_attrs)
            self.tokens.record(r.usage.output_tokens, output_attrs)
        self.results.add(1, result_attrs)
        if cost:
            self.cost.add(cost, attrs)
        if r.kind is FailureKind.CREDENTIAL_UNAVAILABLE:
            self.token_failures.add(1, _entra_attrs(r))
        if t.token_s is not None:
            entra = _entra_attrs(r)
            if r.kind is FailureKind.CREDENTIAL_UNAVAILABLE:
                entra["error.type"] = r.kind.value
            self.token_duration.record(t.token_s, entra)
        slow = r.ok and self._slow(r)
        span = self._spans_all or (self._spans_noteworthy and (slow or not r.ok))
        if not span and not self._logs_on:
            return
        canary_id = f"{_ids.getrandbits(128):032x}"  # unique, not secret: no os.urandom call per canary
        span_context = self._span(r, attrs, canary_id, slow) if span else None
        if self._logs_on:
            self._availability(r, cost, canary_id, span_context)

    def transition(self, t: Transition) -> None:
        with self._lock:
            if t.key in self._states:
                self._states[t.key] = t.new
        attrs: dict[str, Any] = {
            "microsoft.custom_event.name": EVENT_STATE_CHANGE,
            "foundry_monitor.resource": t.key[0], "gen_ai.request.model": t.key[1],
            "foundry_monitor.location": self.location,
            "foundry_monitor.state.from": t.previous.value, "foundry_monitor.state.to": t.new.value,
            "foundry_monitor.reason": t.reason,
        }
        optional = {"foundry_monitor.kind": t.kind.value if t.kind else None, "foundry_monitor.hint": t.hint,
                    "foundry_monitor.request_id": t.request_id,
                    "foundry_monitor.apim_request_id": t.apim_request_id,
                    "foundry_monitor.previous_duration_s": t.previous_duration_s}
        attrs.update({k: v for k, v in optional.items() if v is not None})
        self.logger.emit(timestamp=_ns(t.at), body=f"{t.key[1]}: {t.previous.value} -> {t.new.value}",
                         severity_number=SeverityNumber.INFO, attributes=attrs)

    def event(self, name: str, attributes: Mapping[str, Any], at: datetime) -> None:
        """One custom event (AppEvents `Name` = ``name``): the control plane's fleet changes, drift and
        retirement warnings. Attribute keys are prefixed ``foundry_monitor.``; None values are left out."""
        attrs: dict[str, Any] = {"microsoft.custom_event.name": name,
                                 "foundry_monitor.location": self.location}
        attrs.update({f"foundry_monitor.{k}": v for k, v in attributes.items() if v is not None})
        self.logger.emit(timestamp=_ns(at), body=name, severity_number=SeverityNumber.INFO, attributes=attrs)

    def reloaded(self, ok: bool) -> None:
        self._last_reload_ok = int(ok)
        self.reloads.add(1, {"foundry_monitor.location": self.location,
                             "foundry_monitor.result": "ok" if ok else "failed"})

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def flush(self, timeout_s: float = 10.0) -> bool:
        ms = int(timeout_s * 1000)
        daemon = self.daemon_meter_provider.force_flush(ms) if self.daemon_meter_provider else True
        return all([self.tracer_provider.force_flush(ms), self.logger_provider.force_flush(ms),
                    self.meter_provider.force_flush(ms), daemon])

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Flush and close every provider; gives up (and says so) after timeout_s."""
        def close() -> None:
            self.tracer_provider.shutdown()
            self.logger_provider.shutdown()
            self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            if self.daemon_meter_provider is not None:
                self.daemon_meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            for exporter in self._unused:
                exporter.shutdown()

        for logger, handler in self._bridges:
            logger.removeHandler(handler)
        worker = threading.Thread(target=close, name="telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            event(log, logging.WARNING, "telemetry did not flush in time; unsent items stay in offline "
                  "storage when it is on", event="telemetry", timeout_s=timeout_s)

    def capture_logs(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        """Send the daemon's own warnings and errors as log records (-> AppTraces); canary and state
        change lines are left out, they are already spans, availability results and events."""
        handler = _LogBridge(self, level)
        logger.addHandler(handler)
        self._bridges.append((logger, handler))

    # --- per canary ------------------------------------------------------------------------------

    def _series(self, r: CanaryResult) -> _SeriesAttrs:
        """The attribute sets of this canary's series, built once per series and shared (never mutated:
        the SDK copies what it keeps). Bounded like the series themselves: deployments x kinds."""
        key = (r.resource, r.deployment, r.location, r.response_model, r.kind, r.attempt > 0)
        found = self._series_attrs.get(key)
        if found is None:
            attrs = self._attributes(r)
            result = {**attrs, "foundry_monitor.kind": r.kind.value, "foundry_monitor.recheck": r.attempt > 0}
            found = (attrs, {**attrs, "gen_ai.token.type": "input"}, {**attrs, "gen_ai.token.type": "output"},
                     result)
            self._series_attrs[key] = found
        return found

    def _attributes(self, r: CanaryResult) -> dict[str, Any]:
        host, port = self._servers.get(r.resource, ("", 443))
        attrs: dict[str, Any] = {
            "gen_ai.provider.name": PROVIDER, "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": r.deployment, "server.address": host, "server.port": port,
            "foundry_monitor.resource": r.resource, "foundry_monitor.location": r.location or self.location,
        }
        if r.response_model:
            attrs["gen_ai.response.model"] = r.response_model
        if not r.ok:
            attrs["error.type"] = r.kind.value
        return attrs

    def _slow(self, r: CanaryResult) -> bool:
        """Slower than the deployment's latency or TTFT objective (the health tracker's "degraded")."""
        latency_slo, ttft_slo = self._slo.get((r.resource, r.deployment), (float("inf"), None))
        t = r.timings
        return ((t.total_s is not None and t.total_s > latency_slo)
                or (ttft_slo is not None and t.ttft_s is not None and t.ttft_s > ttft_slo))

    def _span(self, r: CanaryResult, attrs: dict[str, Any], canary_id: str, slow: bool) -> Any:
        start = _ns(r.started_at)
        end = start + int((r.timings.total_s or 0.0) * 1e9)
        span_attrs: dict[str, Any] = {
            **attrs, "gen_ai.system": PROVIDER, "gen_ai.request.stream": True,
            "foundry_monitor.kind": r.kind.value, "foundry_monitor.attempt": r.attempt,
            "foundry_monitor.canary_id": canary_id}
        if slow:
            span_attrs[NOTEWORTHY] = True
        optional = {
            "foundry_monitor.request_id": r.request_id, "foundry_monitor.apim_request_id": r.apim_request_id,
            "foundry_monitor.status_code": r.status_code,
            "gen_ai.response.time_to_first_chunk": r.timings.ttft_s,
            "gen_ai.usage.input_tokens": r.usage.input_tokens if r.usage else None,
            "gen_ai.usage.output_tokens": r.usage.output_tokens if r.usage else None,
            "gen_ai.response.finish_reasons": [r.stop_reason] if r.stop_reason else None,
            "foundry_monitor.hint": None if r.ok else r.verdict.hint,
            "foundry_monitor.detail": None if r.ok else r.detail,
        }
        span_attrs.update({k: v for k, v in optional.items() if v is not None})
        span = self.tracer.start_span(f"{OPERATION} {r.deployment}", kind=SpanKind.CLIENT, start_time=start,
                                      attributes=span_attrs)
        span.set_status(Status(StatusCode.OK) if r.ok else Status(StatusCode.ERROR, r.kind.value))
        span.end(end_time=end)
        return set_span_in_context(span)

    def _availability(self, r: CanaryResult, cost: float | None, canary_id: str, context: Any) -> None:
        attrs: dict[str, Any] = {
            "microsoft.availability.id": canary_id,
            "microsoft.availability.name": f"{r.resource}/{r.deployment}",
            "microsoft.availability.duration": _duration(r.timings.total_s or 0.0),
            "microsoft.availability.success": str(r.ok),
            "microsoft.availability.runLocation": r.location or self.location or "unspecified",
            "microsoft.availability.message": "ok" if r.ok else f"{r.kind.value}: {r.verdict.hint}",
            "foundry_monitor.kind": r.kind.value, "foundry_monitor.attempt": r.attempt,
            "foundry_monitor.resource": r.resource, "gen_ai.request.model": r.deployment,
            "foundry_monitor.model": r.model,
        }
        # everything a report needs, per canary (the Log Analytics report source reads these), and no
        # more: Application Insights bills every byte (an ok canary's status is always 200; timings to
        # the microsecond)
        optional = {"foundry_monitor.request_id": r.request_id,
                    "foundry_monitor.apim_request_id": r.apim_request_id,
                    "foundry_monitor.status_code": None if r.ok else r.status_code,
                    "foundry_monitor.total_s": _us(r.timings.total_s),
                    "foundry_monitor.ttft_s": _us(r.timings.ttft_s),
                    "gen_ai.usage.input_tokens": r.usage.input_tokens if r.usage else None,
                    "gen_ai.usage.output_tokens": r.usage.output_tokens if r.usage else None,
                    "foundry_monitor.cost_usd": cost}
        attrs.update({k: v for k, v in optional.items() if v is not None})
        self.logger.emit(timestamp=_ns(r.started_at), context=context, body=AVAILABILITY_TEST,
                         severity_number=SeverityNumber.INFO if r.ok else SeverityNumber.WARN,
                         attributes=attrs)


class _NoExemplars(ExemplarReservoir):
    """Keeps no exemplars. No exporter here sends them (Prometheus' text format and Azure Monitor have no
    place for them), yet the SDK's default reservoir holds one bucket object per histogram bucket in every
    series and is offered every measurement: at 1,000 deployments that is memory and CPU for nothing."""

    def __init__(self, **_: Any) -> None:
        pass

    def offer(self, value: int | float, time_unix_nano: int, attributes: Any, context: Context) -> None:
        pass

    def collect(self, point_attributes: Any) -> list[Any]:
        return []


def _meter_provider(readers: list[MetricReader], resource: Resource) -> MeterProvider:
    return MeterProvider(metric_readers=readers, resource=resource, exemplar_filter=AlwaysOffExemplarFilter(),
                         views=[View(instrument_name="*", exemplar_reservoir_factory=_no_exemplars)])


def _no_exemplars(_aggregation: Any) -> Any:  # the SDK's builder type is narrower than what it calls
    return _NoExemplars


def _policies(policies: list[str], exporters: list[Any]) -> list[str]:
    return policies if len(policies) == len(exporters) else ["all"] * len(exporters)


class _Fanout:
    """One of the daemon's own instruments on several meters (the canary meter and the daemon meter)."""

    def __init__(self, instruments: list[Any]) -> None:
        self._instruments = instruments

    def add(self, amount: float, attributes: dict[str, Any]) -> None:
        for i in self._instruments:
            i.add(amount, attributes)

    def record(self, amount: float, attributes: dict[str, Any]) -> None:
        for i in self._instruments:
            i.record(amount, attributes)


class _Noteworthy(SpanProcessor):
    """Passes on only the spans of failed canaries (status ERROR) and slow ones (NOTEWORTHY set)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.status.status_code is StatusCode.ERROR or (span.attributes or {}).get(NOTEWORTHY):
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


_SEVERITY = {logging.DEBUG: SeverityNumber.DEBUG, logging.INFO: SeverityNumber.INFO,
             logging.WARNING: SeverityNumber.WARN, logging.ERROR: SeverityNumber.ERROR,
             logging.CRITICAL: SeverityNumber.FATAL}
_EXPORTED_ELSEWHERE = frozenset({"canary", "state_change"})
# the daemon's own events an operator alerts on: sent as custom events (-> AppEvents) named
# foundry_monitor.<event>, with the log line's fields
CUSTOM_EVENTS = frozenset({"store_recovered", "store_unwritable", "results_dropped", "store_writable",
                           "results_lost", "lease_taken_over", "lease_lost"})


class _LogBridge(logging.Handler):
    """The daemon's log events as OpenTelemetry log records, their fields flattened to strings."""

    def __init__(self, telemetry: OtelTelemetry, level: int) -> None:
        super().__init__(level)
        self.telemetry = telemetry

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = getattr(record, "fields", {})
        if fields.get("event") in _EXPORTED_ELSEWHERE:
            return
        attrs = {f"foundry_monitor.{k}": v if isinstance(v, bool | int | float) else str(v)
                 for k, v in fields.items() if v is not None}
        attrs["foundry_monitor.logger"] = record.name
        if fields.get("event") in CUSTOM_EVENTS:
            attrs["microsoft.custom_event.name"] = f"foundry_monitor.{fields['event']}"
        try:
            self.telemetry.logger.emit(timestamp=int(record.created * 1e9), body=record.getMessage(),
                                       severity_number=_SEVERITY.get(record.levelno, SeverityNumber.WARN),
                                       severity_text=record.levelname, attributes=attrs)
        except Exception:  # noqa: BLE001 - a telemetry problem must never break logging
            self.handleError(record)


def _entra_attrs(r: CanaryResult) -> dict[str, Any]:
    return {"foundry_monitor.resource": r.resource, "foundry_monitor.location": r.location}


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)


def _duration(seconds: float) -> str:
    """Application Insights' duration format, D.HH:MM:SS.mmm."""
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d}.{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


# --- building exporters from config -----------------------------------------------------------------


def quiet_azure_sdk() -> None:
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def connection_string(settings: TelemetrySettings) -> str | None:
    if settings.connection_string:
        return settings.connection_string.reveal()
    return os.environ.get(CONNECTION_STRING_ENV) or None


def azure_exporters(conn: str, settings: TelemetrySettings, storage: Path | None,
                    **options: Any) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    """The three Azure Monitor exporters. `options` go to azure-core (tests pass retry and TLS settings).

    In-process retries are off by default: a failed batch goes to offline storage at once and is sent
    again after the next successful export, so an ingestion outage never blocks the daemon.
    """
    quiet_azure_sdk()
    from azure.monitor.opentelemetry.exporter import (
        AzureMonitorLogExporter,
        AzureMonitorMetricExporter,
        AzureMonitorTraceExporter,
    )

    kwargs: dict[str, Any] = {"connection_string": conn, "retry_total": 0, "timeout": 10.0}
    if storage is not None:
        storage.mkdir(parents=True, exist_ok=True)
        kwargs["storage_directory"] = str(storage)
    else:
        kwargs["disable_offline_storage"] = True
    if settings.credential != "none":
        kwargs["credential"] = _ingestion_credential(settings)
    kwargs.update(options)
    try:
        return (AzureMonitorTraceExporter(**kwargs), AzureMonitorMetricExporter(**kwargs),
                AzureMonitorLogExporter(**kwargs))
    except ValueError as exc:  # the exporter's own message names the bad part, never the key
        raise MonitorError(f"telemetry.connection_string is not a valid Application Insights connection "
                         f"string: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _ingestion_credential(settings: TelemetrySettings) -> Any:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.credential == "managed_identity":
        return ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id \
            else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=settings.client_id)


def otlp_exporters() -> tuple[SpanExporter, MetricExporter, LogRecordExporter] | None:
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        event(log, logging.WARNING, f"{OTLP_ENV} is set but the OTLP exporter is not installed; "
              "install it with: pip install 'foundry-monitor[otlp]'", event="telemetry")
        return None
    return OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()


def console_exporters() -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return (ConsoleSpanExporter(out=sys.stderr), ConsoleMetricExporter(out=sys.stderr),
            ConsoleLogRecordExporter(out=sys.stderr))


def build(cfg: Config, data_dir: Path, *, instance_id: str, location: str = "", debug: bool = False,
          **azure_options: Any) -> OtelTelemetry:
    """Telemetry as configured: Azure Monitor with a connection string, OTLP when its endpoint is set,
    console with --telemetry-debug; Prometheus always."""
    settings = cfg.telemetry
    exporters = Exporters()
    conn = connection_string(settings)
    if conn:
        storage = data_dir / "telemetry" if settings.offline_storage else None
        exporters.add("azure-monitor", *azure_exporters(conn, settings, storage, **azure_options),
                      span_policy=settings.azure.spans, metric_policy=settings.azure.metrics)
    if os.environ.get(OTLP_ENV):
        otlp = otlp_exporters()
        if otlp is not None:
            exporters.add("otlp", *otlp)
    if debug:
        exporters.add("console", *console_exporters())
    telemetry = OtelTelemetry(exporters, service_name=settings.service_name, instance_id=instance_id,
                              location=location or settings.location or "",
                              export_interval_s=settings.export_interval)
    event(log, logging.INFO, "telemetry: " + ", ".join(telemetry.exporter_names), event="telemetry",
          exporters=telemetry.exporter_names)
    return telemetry
