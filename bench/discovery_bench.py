"""Benchmark: a discovered fleet of N deployments (emulator ARM over https, the real SDK) refreshing while
the canaries run. Prints how long one ARM read takes, how long a refresh that changes the fleet takes, and
the canaries' scheduling lateness without refreshes and with a changing fleet every few seconds.

    .venv/bin/python bench/discovery_bench.py --deployments 1000 --interval 10s --duration 40s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trustme

from monitor import config as config_mod
from monitor import logs
from monitor.config.durations import parse_duration
from monitor.daemon.service import Daemon, Options
from monitor.store.sqlite import Store

SUB = "00000000-0000-0000-0000-0000000000be"
PER_ACCOUNT = 20


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(n: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    accounts = [{"name": f"acct-{a:03d}", "resource_group": "rg-bench", "location": "eastus2",
                 "deployments": [{"name": f"dep-{a:03d}-{i:02d}", "model": "claude-haiku-4-5",
                                  "version": "20251001"}
                                 for i in range(min(PER_ACCOUNT, n - a * PER_ACCOUNT))]}
                for a in range((n + PER_ACCOUNT - 1) // PER_ACCOUNT)]
    scenario = {"api_key": "bench-key", "arm": {"subscriptions": [{"id": SUB, "accounts": accounts}]}}
    (tmp / "scenario.yaml").write_text(json.dumps(scenario))
    port = free_port()
    pem = str(tmp / "server.pem")
    proc = subprocess.Popen([sys.executable, "-m", "monitor.emulator", "--port", str(port), "--scenario",
                             str(tmp / "scenario.yaml"), "--tls", pem, pem], stdout=subprocess.DEVNULL)
    root = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            import ssl

            httpx.get(f"{root}/_emulator/scenario", timeout=1,
                      verify=ssl.create_default_context(cafile=str(tmp / "ca.pem")))
            return proc, root
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the emulator did not start within 30 s")


def config_text(root: str, tmp: Path, interval: str, refresh: str, data: Path) -> str:
    d = {"subscriptions": [SUB], "arm_endpoint": root, "ca_file": str(tmp / "ca.pem"),
         "endpoint": f"{root}/anthropic/", "refresh": refresh}
    return (f"data_dir: {json.dumps(str(data))}\n"
            f"defaults: {{interval: {interval}, timeout: 5s, confirm: 0}}\n"
            f"server: {{port: 0}}\ndiscovery: {json.dumps(d)}\n")


async def phase(root: str, tmp: Path, interval: str, refresh: str, duration: float, churn: bool,
                name: str) -> dict[str, float]:
    data = tmp / name
    path = tmp / f"{name}.yaml"
    path.write_text(config_text(root, tmp, interval, refresh, data))
    daemon = Daemon(config_mod.load(path), Store.open(data / "results.sqlite3"),
                    Options(config_path=str(path)))
    task = asyncio.create_task(daemon.run(install_signals=False))
    while not daemon.fleet.targets and not task.done():
        await asyncio.sleep(0.1)
    assert daemon.live is not None
    read_s: list[float] = []
    start = time.monotonic()
    cpu0 = os.times()
    n = 0
    import ssl

    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(tmp / "ca.pem"))) as admin:
        while time.monotonic() - start < duration and not task.done():
            if churn:  # one deployment comes or goes before each refresh: every refresh swaps the fleet
                url = f"{root}/_emulator/arm/subscriptions/{SUB}/accounts/acct-000/deployments/churn-{n}"
                await admin.put(url, json={"model": "claude-haiku-4-5"})
                if n:
                    await admin.delete(url.replace(f"churn-{n}", f"churn-{n - 1}"))
                n += 1
                t0 = time.monotonic()
                await daemon.live.reader.snapshot()  # one more read, timed (the daemon's own are not)
                read_s.append(time.monotonic() - t0)
            await asyncio.sleep(parse_duration(refresh) if churn else 5)
    cpu = os.times()
    late = [x * 1000 for x in daemon.scheduler.lateness_s]
    canaries = sum(c[0] for c in daemon.counts.values())
    daemon.request_stop()
    await task
    return {"deployments": len(daemon.fleet.targets), "late_p50": pct(late, 50), "late_p99": pct(late, 99),
            "late_max": max(late, default=float("nan")),
            "read_s": pct(read_s, 50) if read_s else float("nan"),
            "refreshes": daemon.live.counts["ok"], "canaries": canaries,
            "cpu_s": (cpu.user - cpu0.user) + (cpu.system - cpu0.system)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deployments", type=int, default=1000)
    ap.add_argument("--interval", default="10s")
    ap.add_argument("--refresh", default="5s", help="refresh interval of the churning phase")
    ap.add_argument("--duration", default="40s", help="length of each phase")
    args = ap.parse_args()
    logs.setup("warning", "text")
    duration = parse_duration(args.duration)
    with tempfile.TemporaryDirectory(prefix="discovery-bench-") as tmp_name:
        tmp = Path(tmp_name)
        emu, root = start_emulator(args.deployments, tmp)
        os.environ["SSL_CERT_FILE"] = str(tmp / "ca.pem")  # the canaries' https (read before any client)
        os.environ["IDENTITY_ENDPOINT"] = f"{root}/_emulator/identity/token"
        os.environ["IDENTITY_HEADER"] = "emulator-identity-header"
        try:
            quiet = asyncio.run(phase(root, tmp, args.interval, "10m", duration, False, "quiet"))
            churn = asyncio.run(phase(root, tmp, args.interval, args.refresh, duration, True, "churn"))
        finally:
            emu.terminate()
            emu.wait(10)
    print(f"{args.deployments} discovered deployments, interval {args.interval}, {duration:g} s per phase")
    print(f"{'':44} {'no refresh':>12} {'refresh ' + args.refresh + ' + churn':>22}")
    for label, key, fmt in (("deployments probed", "deployments", "{:.0f}"),
                            ("refreshes", "refreshes", "{:.0f}"),
                            ("canaries", "canaries", "{:.0f}"),
                            ("scheduling lateness p50 (ms)", "late_p50", "{:.1f}"),
                            ("scheduling lateness p99 (ms)", "late_p99", "{:.1f}"),
                            ("scheduling lateness max (ms)", "late_max", "{:.1f}"),
                            ("CPU seconds", "cpu_s", "{:.1f}"),
                            ("one ARM read, median (s)", "read_s", "{:.2f}")):
        print(f"{label:44} {fmt.format(quiet[key]):>12} {fmt.format(churn[key]):>22}")


if __name__ == "__main__":
    main()
