"""`foundry-monitor demo`: the daemon against the bundled emulator, with a live view. No Azure."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from monitor.daemon.service import Daemon, Options
from monitor.emulator.runner import EmulatorServer
from monitor.store.sqlite import Store

from . import config as config_mod
from . import logs
from .telemetry import OtelTelemetry

SCENARIO = Path(__file__).with_name("demo_scenario.yaml")
STYLE = {"healthy": "green", "degraded": "yellow", "throttled": "magenta", "down": "red", "unknown": "dim"}

CONFIG = """
data_dir: {data_dir}
defaults:
  interval: 5s
  timeout: 4s
  confirm: 1
  confirm_interval: 1s
  failure_threshold: 2
  success_threshold: 2
  latency_slo: 1500ms
server:
  port: {port}
resources:
  - name: demo
    base_url: {base_url}
    auth: {{api_key: {key}}}
    deployments:
      - {{name: healthy-haiku, model: claude-haiku-4-5}}
      - {{name: slow-sonnet, model: claude-sonnet-4-5}}
      - {{name: throttled-opus, model: claude-opus-4-5}}
      - {{name: flaky-opus, model: claude-opus-4-1}}
      - {{name: retired-sonnet, model: claude-sonnet-4-5}}   # no such deployment on the resource
  - name: demo-rotated-key
    base_url: {base_url}
    auth: {{api_key: "key-that-was-rotated"}}
    deployments:
      - {{name: healthy-haiku, model: claude-haiku-4-5}}
"""


def demo_config(base_url: str, api_key: str, data_dir: Path, port: int) -> config_mod.Config:
    text = CONFIG.format(data_dir=json.dumps(str(data_dir)), port=port, base_url=json.dumps(base_url),
                         key=json.dumps(api_key))
    return config_mod.loads(text, "demo config", env={})


def run(duration_s: float, data_dir: Path, port: int, console: Console | None = None, *,
        keep: bool = True) -> int:
    console = console or Console()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = (data_dir / "demo.log").open("a", encoding="utf-8")
    logs.setup("info", "json", stream=log_file)
    store = Store.open(data_dir / "results.sqlite3")  # UTC days, like the demo config's reports
    try:
        with EmulatorServer(scenario=SCENARIO) as emu:
            cfg = demo_config(emu.base_url, emu.api_key, data_dir, port)
            # Prometheus /metrics only: a demo never sends emulator results to a real Application Insights
            daemon = Daemon(cfg, store, Options(config_path="", location="demo"),
                            telemetry=OtelTelemetry(instance_id=store.instance_id(), location="demo"))
            console.print(f"[bold]foundry-monitor demo[/]: emulator at {emu.base_url}, "
                          f"{len(daemon.fleet.targets)} deployments, {duration_s:g}s (Ctrl-C stops early)")
            asyncio.run(_run(daemon, duration_s, console))
    finally:
        log_file.close()
    _summary(store, data_dir, console, daemon)
    if not keep:
        console.print("(a temporary directory, deleted now; pass --data-dir DIR to keep the store and log)")
    store.close()
    return 0


async def _run(daemon: Daemon, duration_s: float, console: Console) -> None:
    task = asyncio.create_task(daemon.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    with Live(_table(daemon, 0), console=console, refresh_per_second=4, transient=False) as live:
        while not task.done() and loop.time() < end:
            await asyncio.wait({task}, timeout=0.5)
            live.update(_table(daemon, max(0.0, end - loop.time())))
    daemon.request_stop()
    await task


def _table(daemon: Daemon, left_s: float) -> Table:
    table = Table(title=f"deployments ({left_s:.0f}s left)  metrics: http://127.0.0.1:{daemon.port}/metrics",
                  title_justify="left")
    columns = ("resource", "deployment", "state", "last kind", "latency", "ttft", "hint of the last failure")
    for col in columns:
        table.add_column(col, overflow="fold")
    for d in daemon.status()["deployments"]:
        last: dict[str, Any] = d["last_result"] or {}
        fail: dict[str, Any] = d["last_failure"] or {}
        state = d["state"]
        table.add_row(d["resource"], d["deployment"], f"[{STYLE.get(state, '')}]{state}[/]",
                      last.get("kind", "-"), _ms(last.get("latency_ms")), _ms(last.get("ttft_ms")),
                      (fail.get("hint") or "")[:90])
    return table


def _ms(v: object) -> str:
    return f"{v:.0f}ms" if isinstance(v, int | float) else "-"


def _summary(store: Store, data_dir: Path, console: Console, daemon: Daemon) -> None:
    rows = store.query(
        "SELECT resource, deployment, count(*) AS n, sum(kind = 'ok') AS ok, avg(total_s) AS avg_s "
        "FROM results WHERE started_at >= ? GROUP BY resource, deployment ORDER BY resource, deployment",
        (daemon.started_at.timestamp(),))
    states = {(d["resource"], d["deployment"]): d for d in daemon.status()["deployments"]}
    table = Table(title="summary of this run", title_justify="left")
    for col in ("resource", "deployment", "final state", "canaries", "ok", "mean latency", "what to do"):
        table.add_column(col, overflow="fold")
    for r in rows:
        d = states.get((r["resource"], r["deployment"]), {})
        fail = d.get("last_failure") or {}
        hint = "" if d.get("state") == "healthy" else (fail.get("hint") or "")
        table.add_row(r["resource"], r["deployment"], d.get("state", "?"), str(r["n"]), str(r["ok"]),
                      _ms((r["avg_s"] or 0) * 1000), hint)
    console.print(table)
    query = "select deployment, kind, total_s, request_id from results limit 5"
    console.print(f"results store: {store.path}  (try: sqlite3 {store.path} '{query}')")
    console.print(f"daemon log:    {data_dir / 'demo.log'}")
    console.print("while running, the daemon served its status page (/), /status, /metrics and "
                  f"/debug/<deployment> on http://127.0.0.1:{daemon.port}/")
    logging.getLogger("monitor").handlers.clear()
