"""Benchmark: N deployments at a fixed interval against the emulator (a separate process).

Prints CPU seconds per canary, scheduling lateness, the error of measured latency and TTFT against
the emulator's own server-side record, peak RSS and RSS growth after the first minute.

    .venv/bin/python bench/daemon_bench.py --deployments 1000 --interval 10s --duration 150s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from monitor import config as config_mod
from monitor import logs
from monitor.config.durations import parse_duration
from monitor.daemon.service import Daemon, Options
from monitor.store.sqlite import Store

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(n: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    scenario = {"api_key": "bench-key", "deployments": [
        {"name": f"dep-{i:04d}", "model": "claude-haiku-4-5-20251001",
         "latency": {"base": "5ms", "jitter": "2ms"}, "ttft": "2ms", "tokens_per_second": 1000}
        for i in range(n)]}
    path = tmp / "scenario.yaml"
    path.write_text(json.dumps(scenario))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitor.emulator", "--port", str(port), "--scenario",
                             str(path)], stdout=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{root}/_emulator/scenario", timeout=1)
            return proc, f"{root}/anthropic/", "bench-key"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the emulator did not start within 20 s")


def config_text(n: int, base_url: str, key: str, interval: str, data_dir: Path, telemetry: str = "") -> str:
    deps = "\n".join(f"      - {{name: dep-{i:04d}, model: claude-haiku-4-5}}" for i in range(n))
    return (f"data_dir: {json.dumps(str(data_dir))}\n{telemetry}"
            f"defaults: {{interval: {interval}, timeout: 5s, confirm: 0}}\nserver: {{port: 0}}\n"
            f"resources:\n  - name: bench\n    base_url: {base_url}\n    auth: {{api_key: {key}}}\n"
            f"    deployments:\n{deps}\n")


def recorded(daemon: Daemon) -> int:
    return sum(c[0] for c in daemon.counts.values())


WARM_S = 10.0  # start-up (server, 1,000 jobs) is over by then: steady-state CPU is measured after it


async def drive(daemon: Daemon, duration: float, samples: list[tuple[float, float]],
                steady: dict[str, float]) -> None:
    task = asyncio.create_task(daemon.run(install_signals=False))
    start = time.monotonic()
    while time.monotonic() - start < duration and not task.done():
        await asyncio.sleep(5)
        samples.append((time.monotonic() - start, rss_mb()))
        if not steady and time.monotonic() - start >= WARM_S:
            t = os.times()
            steady.update(user=t.user, sys=t.system, canaries=recorded(daemon))
    t = os.times()
    steady.update(user=t.user - steady.get("user", 0), sys=t.system - steady.get("sys", 0),
                  canaries=recorded(daemon) - steady.get("canaries", 0))
    daemon.request_stop()
    await task


CAPTURE = """
import signal, sys, time
from tests.capture import CaptureServer
c = CaptureServer().start()
print(c.port, flush=True)
signal.sigwait([signal.SIGTERM])
"""


def start_capture() -> tuple[str, subprocess.Popen[str]]:
    """A capture server in a separate process; the `telemetry:` config section that sends to it."""
    proc = subprocess.Popen([sys.executable, "-c", CAPTURE], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    conn = f"InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=http://127.0.0.1:{port}/"
    return f"telemetry: {{connection_string: {json.dumps(conn)}, location: bench}}\n", proc


def start_telemetry(cfg: config_mod.Config, data_dir: Path) -> Any:
    """OtelTelemetry as `run` builds it from the config (telemetry.azure.* included)."""
    from monitor import telemetry

    return telemetry.build(cfg, data_dir, instance_id="bench", location="bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deployments", type=int, default=1000)
    ap.add_argument("--interval", default="10s")
    ap.add_argument("--duration", default="150s")
    ap.add_argument("--telemetry", action="store_true",
                    help="record every canary through OpenTelemetry (Prometheus, and Azure Monitor exporters "
                         "sending to a capture server in another process), as `run` does")
    ap.add_argument("--export-all", action="store_true",
                    help="with --telemetry: a span for every canary and every metric series to Azure Monitor "
                         "(telemetry.azure spans/metrics: all), as before #18")
    ap.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop (pip install uvloop)")
    ap.add_argument("--log-level", default="info",
                    help="the daemon's log level; lines go to /dev/null as JSON (info: one line per canary, "
                         "as `run` writes by default)")
    args = ap.parse_args()
    logs.setup(args.log_level, "json", open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    duration = parse_duration(args.duration)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        emu, base_url, key = start_emulator(args.deployments, tmp)
        try:
            section, capture = start_capture() if args.telemetry else ("", None)
            if args.telemetry and args.export_all:
                section = section.replace("location: bench}",
                                          "location: bench, azure: {spans: all, metrics: all}}")
            cfg = config_mod.loads(config_text(args.deployments, base_url, key, args.interval, tmp / "data",
                                               section))
            store = Store.open(tmp / "data" / "results.sqlite3")
            telemetry = start_telemetry(cfg, tmp / "data") if args.telemetry else None
            daemon = Daemon(cfg, store, Options(config_path=""), telemetry=telemetry)
            samples: list[tuple[float, float]] = []
            steady: dict[str, float] = {}
            cpu0, wall0 = time.process_time(), time.monotonic()
            if args.uvloop:
                import uvloop  # noqa: PLC0415 - only for this evaluation

                uvloop.run(drive(daemon, duration, samples, steady))
            else:
                asyncio.run(drive(daemon, duration, samples, steady))
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            rows = store.query("SELECT request_id, total_s, ttft_s, kind FROM results")
            truth = {e["request_id"]: e for e in httpx.get(base_url.replace("/anthropic/", "/_emulator/log"),
                                                            timeout=30).json()}
        finally:
            emu.send_signal(signal.SIGTERM)
            emu.wait(10)
            if capture is not None:
                capture.send_signal(signal.SIGTERM)
                capture.wait(10)
    canaries = len(rows)
    ok = sum(1 for r in rows if r["kind"] == "ok")
    lat_err = [abs(r["total_s"] - truth[r["request_id"]]["total_s"]) * 1000 for r in rows
               if r["request_id"] in truth and r["total_s"] is not None]
    ttft_err = [abs(r["ttft_s"] - truth[r["request_id"]]["ttft_s"]) * 1000 for r in rows
                if r["request_id"] in truth and r["ttft_s"] is not None and truth[r["request_id"]]["ttft_s"]]
    late = [x * 1000 for x in daemon.scheduler.lateness_s]
    after_min = [m for t, m in samples if t >= 60]
    growth = (after_min[-1] - after_min[0]) / after_min[0] * 100 if len(after_min) > 1 else float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"deployments {args.deployments}, interval {args.interval}, ran {wall:.0f}s, canaries {canaries} "
          f"({ok} ok), matched to ground truth {len(lat_err)}")
    print(f"{'figure':42} {'value':>12}  target")
    print(f"{'CPU ms per canary, whole run':42} {cpu / max(canaries, 1) * 1000:12.3f}  <= 2")
    per = 1000 / max(steady["canaries"], 1)
    split = f"{steady['user'] * per:.2f} + {steady['sys'] * per:.2f}"
    print(f"{'CPU ms per canary after warm-up: user + sys':42} {split:>12}  <= 2 (sum)")
    def pair(v: list[float], digits: int = 2) -> str:
        return f"{pct(v, 50):.{digits}f} / {pct(v, 99):.{digits}f}".rjust(12)

    print(f"{'scheduling lateness p50 / p99 (ms)':42} {pair(late, 1)}  p99 <= 100")
    print(f"{'latency error vs ground truth p50 / p99 (ms)':42} {pair(lat_err)}  p99 <= 5")
    print(f"{'TTFT error vs ground truth p50 / p99 (ms)':42} {pair(ttft_err)}")
    running = max((m for _, m in samples), default=float("nan"))
    print(f"{'RSS while running, highest 5 s sample (MB)':42} {running:12.1f}  <= 150")
    # ru_maxrss also counts what this process loads afterwards to compare with the ground truth (every
    # stored result and the emulator's whole log): it grows with the run's length, not the daemon's
    print(f"{'peak RSS incl. the ground-truth check (MB)':42} {peak:12.1f}")
    print(f"{'RSS growth minute 1 -> end (%)':42} {growth:12.2f}  < 5")
    with open("/proc/loadavg") as fh:
        print(f"{'load average at the end (1/5/15 min)':42} {' '.join(fh.read().split()[:3]):>12}")
    if lat_err:
        print(f"{'mean latency error (ms)':42} {statistics.mean(lat_err):12.2f}")


if __name__ == "__main__":
    main()
