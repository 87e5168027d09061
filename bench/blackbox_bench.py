"""Benchmark: CPU per probe of foundry-monitor beside Prometheus' blackbox_exporter, same target, same rate.

Both probe the same emulator (a separate process) with the same streaming POST (`"stream": true`,
`max_tokens: 1`) at the same rate, one after the other:

- blackbox_exporter (Debian package `prometheus-blackbox-exporter`): an `http` module with the POST,
  its headers, `valid_status_codes: [200]` and a body regexp on `message_stop`; probes are driven at
  RATE probes/s by a loopback scraper in this process (as Prometheus would, without Prometheus);
- `foundry-monitor run` (a process of its own, as in production) with RATE x 10 deployments at 10 s,
  once Prometheus only and once exporting to Azure Monitor (a capture server in another process as the
  ingestion endpoint). Its canaries are counted from its own `/metrics`.

CPU seconds (user + system) of each process are read from /proc/PID/stat over the measured window
(after a warm-up). Prints CPU ms per probe and the monitor's ratio to blackbox_exporter. The machine's
load average is printed beside every figure: on a loaded machine the figures are not comparable.

    .venv/bin/python bench/blackbox_bench.py --rates 50 100 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from daemon_bench import CAPTURE, free_port, start_emulator  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SCRAPE_INTERVAL_S = 15.0  # deploy/compose/prometheus.yml
BODY = {"model": "dep-0000", "max_tokens": 1, "stream": True,
        "messages": [{"role": "user", "content": "Reply with the single word OK."}]}


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def wait_http(url: str, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within 30 s")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- blackbox_exporter ----------------------------------------------------------------------------


def blackbox_config(key: str) -> str:
    module = {"modules": {"foundry": {"prober": "http", "timeout": "5s", "http": {
        "method": "POST", "valid_status_codes": [200], "preferred_ip_protocol": "ip4",
        "headers": {"Content-Type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"},
        "body": json.dumps(BODY), "fail_if_body_not_matches_regexp": ["event: message_stop"]}}}}
    return json.dumps(module)


async def scrape(url: str, rate: float, seconds: float) -> tuple[int, int]:
    """Drive `rate` probes a second for `seconds`; (probes answered, probes that succeeded)."""
    done = ok = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        async def one() -> None:
            nonlocal done, ok
            try:
                text = (await client.get(url)).text
            except httpx.HTTPError:
                return
            done += 1
            ok += "probe_success 1" in text

        tasks = []
        start = time.monotonic()
        n = int(rate * seconds)
        for k in range(n):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return done, ok


def run_blackbox(binary: str, tmp: Path, base_url: str, key: str, rate: float, seconds: float,
                 warm: float) -> tuple[float, int, int]:
    cfg = tmp / "blackbox.yml"
    cfg.write_text(blackbox_config(key))
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/healthy", "blackbox_exporter", proc)
        url = f"http://127.0.0.1:{port}/probe?module=foundry&target={base_url}v1/messages"
        asyncio.run(scrape(url, rate, warm))
        c0 = cpu_s(proc.pid)
        done, ok = asyncio.run(scrape(url, rate, seconds))
        return cpu_s(proc.pid) - c0, done, ok
    finally:
        stop(proc)


# --- foundry-monitor ------------------------------------------------------------------------------


def monitor_config(n: int, base_url: str, key: str, data_dir: Path, port: int, conn: str | None) -> str:
    deps = "\n".join(f"      - {{name: dep-{i:04d}, model: claude-haiku-4-5}}" for i in range(n))
    telemetry = (f"telemetry: {{connection_string: {json.dumps(conn)}, location: bench}}\n" if conn else "")
    return (f"data_dir: {json.dumps(str(data_dir))}\n"
            f"defaults: {{interval: 10s, timeout: 5s}}\nserver: {{port: {port}}}\n{telemetry}"
            f"resources:\n  - name: bench\n    base_url: {base_url}\n    auth: {{api_key: {key}}}\n"
            f"    deployments:\n{deps}\n")


def canaries(metrics_url: str) -> tuple[float, float]:
    """(canaries, ok canaries) the monitor has counted so far, from its own /metrics."""
    lines = [line for line in httpx.get(metrics_url, timeout=10).text.splitlines()
             if line.startswith("foundry_monitor_canary_results_total{")]
    def total(rows: list[str]) -> float:
        return sum(float(row.rsplit(" ", 1)[1]) for row in rows)
    return total(lines), total([row for row in lines if 'foundry_monitor_kind="ok"' in row])


def run_monitor(tmp: Path, base_url: str, key: str, rate: float, seconds: float, warm: float,
                azure: bool) -> tuple[float, int, int]:
    capture = None
    conn = None
    if azure:
        capture = subprocess.Popen([sys.executable, "-c", CAPTURE], cwd=ROOT, stdout=subprocess.PIPE,
                                   text=True)
        assert capture.stdout is not None
        conn = (f"InstrumentationKey=00000000-0000-4000-8000-000000000001;"
                f"IngestionEndpoint=http://127.0.0.1:{int(capture.stdout.readline())}/")
    port = free_port()
    data = tmp / f"monitor-{int(rate)}-{int(azure)}"
    cfg = tmp / f"checks-{int(rate)}-{int(azure)}.yaml"
    cfg.write_text(monitor_config(int(rate * 10), base_url, key, data, port, conn))
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--log-format",
                             "json"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_http(f"http://127.0.0.1:{port}/healthz", "foundry-monitor", proc)
        time.sleep(warm)  # the first round and the schedule's stagger: steady state after it
        (n0, ok0), c0 = canaries(metrics), cpu_s(proc.pid)
        time.sleep(seconds)
        c1, (n1, ok1) = cpu_s(proc.pid), canaries(metrics)
        # what one Prometheus scrape of /metrics costs the monitor at this fleet size (not in the figures
        # above; printed beside them): a few scrapes, CPU read from /proc around each
        costs = []
        for _ in range(3):
            s0 = cpu_s(proc.pid)
            size = len(httpx.get(metrics, timeout=60).content)
            costs.append(cpu_s(proc.pid) - s0)
        scrape = sorted(costs)[1]
        per = scrape / (rate * SCRAPE_INTERVAL_S) * 1000
        print(f"        one scrape of /metrics ({size / 1e6:.1f} MB): {scrape:.2f} s CPU, i.e. "
              f"{per:.3f} ms per canary at a {SCRAPE_INTERVAL_S:.0f} s scrape interval", flush=True)
        return c1 - c0, int(n1 - n0), int(ok1 - ok0)
    finally:
        stop(proc)
        if capture is not None:
            stop(capture)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0], help="probes a second")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window of each run")
    ap.add_argument("--warm", type=float, default=20.0, help="warm-up before each window")
    ap.add_argument("--blackbox", default=shutil.which("prometheus-blackbox-exporter") or "blackbox_exporter")
    args = ap.parse_args()
    if not shutil.which(args.blackbox) and not Path(args.blackbox).exists():
        raise SystemExit("blackbox_exporter not found: apt-get install -y --no-install-recommends "
                         "prometheus-blackbox-exporter (./scripts/test installs it as root)")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        emu, base_url, key = start_emulator(int(max(args.rates) * 10), tmp)
        rows = []
        try:
            for rate in args.rates:
                def bbx(r: float = rate) -> tuple[float, int, int]:
                    return run_blackbox(args.blackbox, tmp, base_url, key, r, args.seconds, args.warm)

                def mon(azure: bool, r: float = rate) -> tuple[float, int, int]:
                    return run_monitor(tmp, base_url, key, r, args.seconds, args.warm, azure=azure)

                runs = [("blackbox_exporter", bbx), ("monitor, Prometheus only", lambda: mon(False)),
                        ("monitor, Azure export", lambda: mon(True))]
                base = None
                for name, fn in runs:
                    before = load()
                    cpu, done, ok = fn()
                    per = cpu / max(done, 1) * 1000
                    base = per if base is None else base
                    rows.append((rate, name, done, ok, cpu, per, per / base, before, load()))
                    print(f"{rate:5.0f}/s  {name:26} probes {done:6d} (ok {ok:6d})  CPU {cpu:6.2f} s  "
                          f"{per:6.3f} ms/probe  ratio {per / base:4.2f}  load {before} -> {load()}",
                          flush=True)
        finally:
            stop(emu)
    print("\nrate  process                     ms CPU per probe  vs blackbox  load average (1/5/15 min)")
    for rate, name, _done, _ok, _cpu, per, ratio, before, after in rows:
        print(f"{rate:4.0f}  {name:26} {per:16.3f}  {ratio:10.2f}  {before} -> {after}")


if __name__ == "__main__":
    main()
