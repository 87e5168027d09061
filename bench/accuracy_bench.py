"""Benchmark: how closely one canary's measured latency and TTFT match the emulator's ground truth.

Sequential canaries on an otherwise idle machine (the emulator runs in its own process), streamed and
not, with latency, TTFT and a paced stream configured. Prints the error against the server-side
record (p50 / p99 / max, ms), the CPU cost per canary of the probe, and how fast the emulator starts.

    .venv/bin/python bench/accuracy_bench.py --canaries 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from monitor.canary import probe
from monitor.canary.auth import ApiKeyAuth
from monitor.canary.fleet import build_transport
from monitor.config.secrets import Secret

KEY = "bench-key"
SCENARIO = {"api_key": KEY, "deployments": [
    {"name": "fast", "latency": {"base": "2ms"}, "ttft": "3ms", "reply": "OK"},
    {"name": "paced", "latency": {"base": "20ms", "jitter": "10ms"}, "ttft": "40ms", "tokens_per_second": 100,
     "reply": "a reply long enough to be paced over several tokens"},
]}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


def trip(v: list[float]) -> str:
    return f"{pct(v, 50):.2f} / {pct(v, 99):.2f} / {max(v, default=float('nan')):.2f}"


def start_emulator(tmp: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    path = tmp / "scenario.json"
    path.write_text(json.dumps(SCENARIO))
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "monitor", "emulator", "--port", "0", "--scenario", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    base_url = proc.stdout.readline().decode().split()[-1]
    ready = time.perf_counter() - started
    return proc, base_url, ready


async def measure(base_url: str, n: int) -> list[tuple[str, bool, probe.Outcome, float]]:
    transport = build_transport(base_url)
    auth = ApiKeyAuth(Secret(KEY))
    out = []
    try:
        for i in range(n):
            name, stream = ("fast", "paced")[i % 2], i % 4 < 2
            req = probe.Request.build("bench", name, base_url + "v1/messages", prompt="Reply with OK.",
                                      max_tokens=64, stream=stream, timeout=10)
            cpu = time.process_time()
            outcome = await probe.run(req, transport, auth)
            out.append((name, stream, outcome, time.process_time() - cpu))
    finally:
        await transport.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--canaries", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base_url, ready = start_emulator(Path(tmp))
        try:
            asyncio.run(measure(base_url, 20))  # warm up: imports, the connection
            runs = asyncio.run(measure(base_url, args.canaries))
            truth = {e["request_id"]: e for e in httpx.get(base_url.replace("/anthropic/", "/_emulator/log"),
                                                            timeout=30).json()}
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    print(f"emulator ready (banner printed, port bound) in {ready * 1000:.0f} ms  (target < 2000 ms)")
    print(f"{'canaries':28} {'n':>5} {'latency err p50/p99/max ms':>28} {'TTFT err p50/p99/max ms':>26} "
          f"{'CPU ms':>7}")
    for name in ("fast", "paced"):
        for stream in (True, False):
            rows = [(o, c) for n, s, o, c in runs if n == name and s == stream]
            lat = [abs(o.timings.total_s - truth[o.request_id]["total_s"]) * 1000 for o, _ in rows
                   if o.request_id in truth and o.timings.total_s is not None]
            ttft = [abs(o.timings.ttft_s - truth[o.request_id]["ttft_s"]) * 1000 for o, _ in rows
                    if stream and o.request_id in truth and o.timings.ttft_s is not None]
            cpu = sorted(c * 1000 for _, c in rows)
            label = f"{name}, {'stream' if stream else 'json'}"
            print(f"{label:28} {len(rows):5} {trip(lat):>28} {trip(ttft) if stream else '-':>26} "
                  f"{pct(cpu, 50):7.2f}")


if __name__ == "__main__":
    main()
