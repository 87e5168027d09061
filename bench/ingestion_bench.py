"""Benchmark: bytes sent to Azure Monitor per canary, by envelope type.

The real Azure Monitor exporters, built by `monitor.telemetry.build` from a config as `run` builds them,
send to a capture server on loopback. N deployments at one interval (default 60 s) run in compressed
time: each simulated interval records one canary per deployment through the telemetry (a few
deployments failing with rotating kinds, each failure re-checked once as `confirm: 1` does), state
changes come from the real health tracker, and metrics are exported once per `telemetry.export_interval`
of simulated time. Prints the uncompressed JSON bytes of every envelope received, per canary and per
envelope type, beside the constants `validate` estimates the bill from (monitor/ingestion.py).

    .venv/bin/python bench/ingestion_bench.py --deployments 200 --minutes 10
    .venv/bin/python bench/ingestion_bench.py --spans all --metrics all    # everything, as before #18
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor import config as config_mod  # noqa: E402
from monitor.canary.classify import HINTS  # noqa: E402
from monitor.canary.pricing import cost_usd  # noqa: E402
from monitor.canary.results import CanaryResult, FailureKind, Timings, Usage, Verdict  # noqa: E402
from monitor.daemon.health import HealthTracker  # noqa: E402
from tests.capture import CaptureServer  # noqa: E402

FAIL_KINDS = (FailureKind.SERVER_ERROR, FailureKind.TIMEOUT, FailureKind.OVERLOADED,
              FailureKind.RATE_LIMITED)
PER_DEPLOYMENT = {"gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk",
                  "gen_ai.client.token.usage", "foundry_monitor.canary.results",
                  "foundry_monitor.canary.cost", "foundry_monitor.deployment.state"}
KIND_OF = {"MetricData": "metrics", "RemoteDependencyData": "span", "RequestData": "span",
           "AvailabilityData": "availability", "EventData": "events", "MessageData": "logs",
           "ExceptionData": "logs"}


def config_text(n: int, conn: str, data_dir: Path, interval: int, spans: str | None,
                metrics: str | None) -> str:
    deps = "\n".join(f"      - {{name: claude-sonnet-4-5-{i:04d}, model: claude-sonnet-4-5}}"
                     for i in range(n))
    azure = {k: v for k, v in (("spans", spans), ("metrics", metrics)) if v}
    azure_line = f"  azure: {json.dumps(azure)}\n" if azure else ""
    return (f"data_dir: {json.dumps(str(data_dir))}\n"
            f"defaults: {{interval: {interval}s}}\n"
            f"telemetry:\n  connection_string: {json.dumps(conn)}\n  offline_storage: false\n"
            f"  location: westeurope\n{azure_line}"
            f"resources:\n  - name: contoso-foundry-eastus2\n    resource: contoso-foundry-eastus2\n"
            f"    location: eastus2\n    auth: {{api_key: bench-key}}\n    deployments:\n{deps}\n")


def canary(res: str, dep: str, model: str, at: datetime, i: int, kind: FailureKind,
           attempt: int) -> CanaryResult:
    ok = kind is FailureKind.OK
    total = 0.35 + (i % 97) / 300
    usage = Usage(input_tokens=19, output_tokens=1) if ok else None
    status = {FailureKind.OK: 200, FailureKind.SERVER_ERROR: 500, FailureKind.OVERLOADED: 529,
              FailureKind.RATE_LIMITED: 429, FailureKind.TIMEOUT: None}[kind]
    answered = status is not None
    return CanaryResult(
        resource=res, deployment=dep, model=model, location="westeurope", started_at=at,
        verdict=Verdict(kind, HINTS[kind]), status_code=status,
        timings=Timings(total_s=total if ok else (30.0 if kind is FailureKind.TIMEOUT else 0.2),
                        headers_s=total * 0.6 if answered else None, ttft_s=total * 0.7 if ok else None),
        usage=usage, request_id=f"req_011CV{uuid.uuid4().hex[:19]}" if answered else None,
        apim_request_id=str(uuid.uuid4()) if answered else None,
        response_model="claude-sonnet-4-5-20250929" if ok else None, stop_reason="max_tokens" if ok else None,
        detail=None if ok else f"HTTP {status}: {kind.value}", attempt=attempt)


def envelope_bytes(env: dict[str, Any]) -> int:
    return len(json.dumps(env, separators=(",", ":"), ensure_ascii=False).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deployments", type=int, default=200)
    ap.add_argument("--minutes", type=int, default=10, help="simulated minutes")
    ap.add_argument("--interval", type=int, default=60, help="canary interval in seconds")
    ap.add_argument("--failing", type=int, default=4, help="deployments that fail every canary")
    ap.add_argument("--spans", choices=("failures", "all", "none"), default=None,
                    help="telemetry.azure.spans (default: the config default)")
    ap.add_argument("--metrics", choices=("daemon", "all", "none"), default=None,
                    help="telemetry.azure.metrics (default: the config default)")
    args = ap.parse_args()

    from monitor import ingestion, telemetry

    with tempfile.TemporaryDirectory() as tmpdir, CaptureServer() as cap:
        tmp = Path(tmpdir)
        text = config_text(args.deployments, cap.connection_string, tmp / "data", args.interval, args.spans,
                           args.metrics)
        cfg = config_mod.loads(text)
        tel = telemetry.build(cfg, tmp / "data", instance_id="bench-ingestion", location="westeurope",
                              retry_total=0)
        health = HealthTracker()
        tel.fleet(cfg, {})
        targets = list(cfg.targets())
        t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        canaries = 0
        export_every = max(1, round(cfg.telemetry.export_interval / 60))
        minutes = args.minutes * 60 // args.interval
        for m in range(minutes):
            for i, (res, dep, settings) in enumerate(targets):
                at = t0 + timedelta(seconds=m * args.interval + i * args.interval / len(targets))
                failing = i < args.failing
                kind = FAIL_KINDS[i % len(FAIL_KINDS)] if failing else FailureKind.OK  # down or throttled
                attempts = [0, 1] if failing and kind is not FailureKind.RATE_LIMITED else [0]
                for attempt in attempts:
                    r = canary(res.name, dep.name, dep.model_id, at + timedelta(seconds=5 * attempt), i, kind,
                               attempt)
                    tel.record(r, cost_usd(r.model, r.usage) if r.usage else None)
                    canaries += 1
                    if attempt == attempts[-1]:
                        change = health.observe(r, settings, r.started_at)
                        if change is not None:
                            tel.transition(change.transition)
            if (m + 1) % export_every == 0:
                tel.meter_provider.force_flush()
                if tel.daemon_meter_provider is not None:
                    tel.daemon_meter_provider.force_flush()
        tel.flush()
        tel.shutdown()
        envelopes = list(cap.envelopes)
        wire = sum(r["bytes"] for r in cap.requests)

    by: dict[str, list[int]] = defaultdict(list)
    startup = 0  # unknown -> healthy once per deployment when a daemon starts: not a per-canary cost
    for env in envelopes:
        kind = KIND_OF.get(env.get("data", {}).get("baseType", ""), "other")
        if kind == "metrics":
            # the daemon's own series vs one of the per-deployment series (`metrics: all`)
            names = {m["name"] for m in env["data"]["baseData"]["metrics"]}
            kind = "metrics" if names & PER_DEPLOYMENT else "daemon metrics"
        props = env["data"]["baseData"].get("properties", {})
        if kind == "events" and props.get("foundry_monitor.state.from") == "unknown":
            kind, startup = "start-up events", startup + envelope_bytes(env)
        by[kind].append(envelope_bytes(env))
    total = sum(sum(v) for v in by.values())
    consts = ingestion.ENVELOPE_BYTES
    print(f"deployments {args.deployments} ({args.failing} failing), interval {args.interval}s, "
          f"{args.minutes} simulated min, canaries {canaries}, spans={cfg.telemetry.azure.spans}, "
          f"metrics={cfg.telemetry.azure.metrics}, export_interval {cfg.telemetry.export_interval:.0f}s")
    print(f"{'envelope type':16} {'count':>7} {'bytes each':>11} {'per canary':>11} {'constant each':>14}")
    for name in ("availability", "span", "metrics", "daemon metrics", "events", "start-up events", "logs",
                 "other"):
        sizes = by.get(name, [])
        each = sum(sizes) / len(sizes) if sizes else 0.0
        const = consts.get(name)
        print(f"{name:16} {len(sizes):7d} {each:11.0f} {sum(sizes) / canaries:11.0f} "
              f"{'' if const is None else f'{const:14d}'}")
    print(f"{'all envelopes':16} {len(envelopes):7d} {'':11} {total / canaries:11.0f}")
    print(f"{'without start-up':16} {'':7} {'':11} {(total - startup) / canaries:11.0f}   target <= 1500 "
          "(start-up events come once per deployment and daemon start)")
    print(f"request bodies on the wire: {wire / canaries:.0f} bytes per canary (the exporter's own JSON)")
    est = ingestion.estimate(cfg)
    print(f"validate's estimate for this config: {est.bytes_per_canary:.0f} bytes per canary, "
          f"{est.gb_per_day:.3f} GB/day at the configured interval")


if __name__ == "__main__":
    main()
