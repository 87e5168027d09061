"""`foundry-monitor demo`: the daemon against the bundled emulator, with a live view. No Azure."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

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
    _summary(store, data_dir, console, daemon, keep)
    store.close()
    return 0


async def _run(daemon: Daemon, duration_s: float, console: Console) -> None:
    task = asyncio.create_task(daemon.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    if not console.is_terminal:  # a pipe or a file: no live view redrawn in place, only the summary
        await asyncio.wait({task}, timeout=duration_s)
    else:
        with Live(_live(daemon, 0), console=console, refresh_per_second=4, transient=False) as live:
            while not task.done() and loop.time() < end:
                await asyncio.wait({task}, timeout=0.5)
                live.update(_live(daemon, max(0.0, end - loop.time())))
    daemon.request_stop()
    await task


def _live(daemon: Daemon, left_s: float) -> RenderableType:
    return live_view(daemon.status()["deployments"], left_s, daemon.port or 0)


def live_view(deployments: list[dict[str, Any]], left_s: float, port: int) -> RenderableType:
    """The live table (from the daemon's /status deployments): names whole, one line per row, the hint
    of the last failure in a column when the terminal is wide enough and below the table otherwise."""
    rows: list[list[str | Text]] = []
    hints: list[tuple[str, str]] = []
    for d in deployments:
        last: dict[str, Any] = d["last_result"] or {}
        fail: dict[str, Any] = d["last_failure"] or {}
        rows.append([d["resource"], d["deployment"], Text(d["state"], style=STYLE.get(d["state"], "")),
                     last.get("kind", "-"), _ms(last.get("latency_ms")), _ms(last.get("ttft_ms"))])
        hints.append((f'{d["resource"]}/{d["deployment"]}', fail.get("hint") or ""))
    title = f"deployments ({left_s:.0f}s left)  metrics: http://127.0.0.1:{port}/metrics"
    return _fitted(title, ["resource", "deployment", "state", "last kind", "latency", "ttft"], rows,
                   "hint of the last failure", hints, optional=("ttft",))


def _fitted(title: str, columns: list[str], rows: Sequence[Sequence[str | Text]], hint_header: str,
            hints: list[tuple[str, str]], optional: tuple[str, ...] = (), whole: bool = False,
            ) -> RenderableType:
    """A table that fits the console it is printed on without breaking a name: cells never wrap; the hint
    column is there when at least HINT_MIN columns are left for it, else each hint is one line under the
    table (cut with an ellipsis); `optional` columns go first when even the names do not fit. With `whole`
    (the closing summary: what to do), every hint is under the table, in full."""

    cells = [[c if isinstance(c, Text) else Text(str(c)) for c in row] for row in rows]  # never markup

    def render(console: Console, options: ConsoleOptions) -> RenderResult:
        keep = list(columns)
        width = options.max_width
        while _width(keep, columns, cells) > width and any(c in keep for c in optional):
            keep.remove(next(c for c in optional if c in keep))
        inline = not whole and _width(keep, columns, cells) + _GAP + HINT_MIN <= width
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                      pad_edge=False)
        for c in keep:
            table.add_column(c, no_wrap=True)
        if inline:
            table.add_column(hint_header, no_wrap=False, ratio=1)  # shrinks first; its cells never wrap
        for row, (_, hint) in zip(cells, hints, strict=True):
            shown = [cell for c, cell in zip(columns, row, strict=True) if c in keep]
            if inline:
                shown.append(Text(hint, no_wrap=True, overflow="ellipsis"))
            table.add_row(*shown)
        yield table
        if not inline and any(hint for _, hint in hints):
            yield Text(f"{hint_header}:", style="bold")
            for name, hint in hints:
                if hint:
                    if whole:
                        yield Text(f"  {name}:")
                        yield Padding(Text(hint), (0, 0, 0, 4))
                    else:
                        yield Text(f"  {name}: {hint}", no_wrap=True, overflow="ellipsis")

    return _Render(render)


HINT_MIN = 30  # columns a hint needs in the table to say anything; fewer: under the table instead
_GAP = 3  # a column separator with its padding (box.SIMPLE_HEAD, no edges)


def _width(keep: list[str], columns: list[str], rows: list[list[Text]]) -> int:
    widths = [max([len(c), *(r[i].cell_len for r in rows)]) for i, c in enumerate(columns) if c in keep]
    return sum(widths) + _GAP * (len(widths) - 1)


class _Render:
    """A renderable that lays itself out for the console width it gets."""

    def __init__(self, fn: Callable[[Console, ConsoleOptions], RenderResult]) -> None:
        self.fn = fn

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        return self.fn(console, options)


def _ms(v: object) -> str:
    return f"{v:.0f}ms" if isinstance(v, int | float) else "-"


SUMMARY_COLUMNS = ["resource", "deployment", "final state", "canaries", "ok", "mean latency"]


def _summary(store: Store, data_dir: Path, console: Console, daemon: Daemon, keep: bool) -> None:
    rows = store.query(
        "SELECT resource, deployment, count(*) AS n, sum(kind = 'ok') AS ok, avg(total_s) AS avg_s "
        "FROM results WHERE started_at >= ? GROUP BY resource, deployment ORDER BY resource, deployment",
        (daemon.started_at.timestamp(),))
    states = {(d["resource"], d["deployment"]): d for d in daemon.status()["deployments"]}
    table: list[list[str]] = []
    hints: list[tuple[str, str]] = []
    for r in rows:
        d = states.get((r["resource"], r["deployment"]), {})
        fail = d.get("last_failure") or {}
        hint = "" if d.get("state") == "healthy" else (fail.get("hint") or "")
        table.append([r["resource"], r["deployment"], d.get("state", "?"), str(r["n"]), str(r["ok"]),
                      _ms((r["avg_s"] or 0) * 1000)])
        hints.append((f'{r["resource"]}/{r["deployment"]}', hint))
    if console.is_terminal:
        console.print(_fitted("summary of this run", SUMMARY_COLUMNS, table, "what to do", hints, whole=True))
    else:  # plain text for a pipe or a file: no box drawing, no width to fit, every hint whole
        console.print(Text(plain_summary(table, hints)), highlight=False, soft_wrap=True)
    def say(line: str, whole: bool = False) -> None:  # a path or a command is never broken: it is copied
        console.print(Text(line), soft_wrap=whole, highlight=False)

    say("while running, the daemon served its status page (/), /status, /metrics and "
        f"/debug/<deployment> on http://127.0.0.1:{daemon.port}/")
    if keep:
        query = "select deployment, kind, total_s, request_id from results limit 5"
        say(f"results store: {store.path}", whole=True)
        say(f"  try: sqlite3 {store.path} '{query}'", whole=True)
        say(f"daemon log:    {data_dir / 'demo.log'}", whole=True)
    else:
        say("the store and the log were in a temporary directory, deleted now; pass --data-dir DIR to keep "
            "them and query the results afterwards")
    logging.getLogger("monitor").handlers.clear()


def plain_summary(rows: list[list[str]], hints: list[tuple[str, str]]) -> str:
    """The summary as plain lines: columns aligned with spaces, then what to do, one line per failure."""
    table = [SUMMARY_COLUMNS, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["summary of this run"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    todo = [f"  {name}: {hint}" for name, hint in hints if hint]
    if todo:
        lines += ["what to do:", *todo]
    return "\n".join(lines)
