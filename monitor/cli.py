"""The command line: subcommands, exit codes, and the only place that prints for humans.

Exit codes: 0 success, 1 a check or health probe failed, 2 bad input (config, arguments), 3 an
internal error (a bug: the message says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.canary.results import CanaryResult
from monitor.config.durations import format_duration, parse_duration
from monitor.reports.source import ReportSource

if TYPE_CHECKING:
    from monitor.store.sqlite import Store

from . import __version__
from . import config as config_mod
from .emulator import cli as emulator_cli
from .errors import MonitorError
from .reports import FORMATS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except MonitorError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback, no secret
        logging.getLogger("monitor").debug("internal error", exc_info=True)
        print(f"internal error: {type(exc).__name__} (please report it; run with --log-level debug for "
              "details)", file=sys.stderr)
        return EXIT_BUG


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a whole number of 1 or more, got "{text}"')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry-monitor",
        description="Watch Claude deployments on Microsoft Foundry: send canaries, classify failures, "
        "export telemetry, build reports.",
        epilog="Config: --config PATH, or FOUNDRY_MONITOR_CONFIG, or ./checks.yaml. "
        "Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"foundry-monitor {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", default=None, metavar="PATH",
                       help="config file (default: $FOUNDRY_MONITOR_CONFIG or ./checks.yaml)")
        p.set_defaults(handler=handler)
        return p

    p = command("validate", "check the config file and print what would be monitored", cmd_validate)
    p.add_argument("--shard", default=os.environ.get("FOUNDRY_MONITOR_SHARD"), metavar="I/N",
                   help="also check the config for a daemon run with --shard I/N (env FOUNDRY_MONITOR_SHARD)")
    p = command("check", "send one canary to every deployment (or the named ones) and print the results",
                cmd_check)
    p.add_argument("--deployment", action="append", metavar="NAME",
                   help="probe only this deployment (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p = command("run", "run the monitoring daemon (SIGTERM/SIGINT stop it, SIGHUP reloads the config)",
                cmd_run)
    p.add_argument("--shard", default=os.environ.get("FOUNDRY_MONITOR_SHARD"), metavar="I/N",
                   help="probe only this replica's stable share of deployments (env FOUNDRY_MONITOR_SHARD)")
    p.add_argument("--location", default=os.environ.get("FOUNDRY_MONITOR_LOCATION", ""), metavar="NAME",
                   help="label every result with where this daemon runs (env FOUNDRY_MONITOR_LOCATION)")
    p.add_argument("--host", default=None, help="HTTP server address (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP server port (default: server.port, 9464)")
    p.add_argument("--max-concurrency", type=_positive, default=64, metavar="N",
                   help="canaries in flight at most (default 64)")
    p.add_argument("--telemetry-debug", action="store_true",
                   help="also print every span, metric and log record to stderr (console exporter)")
    _log_options(p)
    p = command("health", "exit 0 when a running daemon answers /healthz (the container HEALTHCHECK)",
                cmd_health)
    p.add_argument("--url", help="the /healthz URL (env FOUNDRY_MONITOR_HEALTH_URL)",
                   default=os.environ.get("FOUNDRY_MONITOR_HEALTH_URL", "http://127.0.0.1:9464/healthz"))
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    p = command("report", "build the rolling report (availability, latency, failures, incidents, tokens, "
                "cost) from the local store or Log Analytics", cmd_report)
    p.add_argument("--days", type=int, default=None, metavar="N",
                   help="period length in local days, ending now: today so far is the last one, marked "
                   "partial (default: reports.days, 30)")
    p.add_argument("--source", choices=("local", "log-analytics"), default=None,
                   help="where the data comes from (default: log-analytics when a workspace is configured)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    p.add_argument("--output", metavar="FILE", default=None, help="write to FILE instead of stdout")
    p.add_argument("--timezone", default=None, metavar="ZONE",
                   help="IANA time zone for day boundaries (default: reports.timezone)")
    p.add_argument("--email", action="store_true",
                   help="send the weekly email now (last 7 days beside 30) with the email settings")
    p.add_argument("--to", action="append", metavar="ADDR",
                   help="with --email: send to ADDR instead of reports.weekly.recipients (repeatable)")
    p = command("inventory", "list every Claude deployment the discovery section finds in Azure Resource "
                "Manager: account, region, model and version, SKU, capacity, rate limits, state, days to "
                "retirement, quota use", cmd_inventory)
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p = sub.add_parser("emulator", help="run the local Foundry emulator (for tests, demos and trials)",
                       description="Serve a faithful Foundry emulator: /anthropic/v1/messages with the "
                       "Azure error shapes, fault injection from a scenario file, a managed-identity token "
                       "endpoint and a ground-truth log under /_emulator/.")
    emulator_cli.add_arguments(p)
    p.set_defaults(handler=emulator_cli.main)
    p = sub.add_parser("demo", help="run the daemon against the emulator for a minute, no Azure needed",
                       description="Start the emulator with one deployment per situation worth seeing "
                       "(healthy, slow, throttled, flaky, missing, rotated key), run the daemon against it "
                       "with a local store, show the live state and end with a summary.")
    p.add_argument("--duration", default="60s", help="how long to run (default 60s; e.g. 30s, 5m)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the store and the log go (default: a fresh temporary directory)")
    p.add_argument("--port", type=int, default=0, help="the daemon's HTTP port (default: a free one)")
    p.set_defaults(handler=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo  # rich and the emulator load only for the demo

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise MonitorError(f"--duration: {exc}") from None
    if args.data_dir is None:
        with tempfile.TemporaryDirectory(prefix="foundry-monitor-demo-") as tmp:
            return demo.run(duration, Path(tmp), args.port, keep=False)
    return demo.run(duration, Path(args.data_dir), args.port, keep=True)


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto",
                   help="log line format (auto: json unless stderr is a terminal)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                   help="overrides log_level from the config")


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config or config_mod.default_path())


def _read_control_plane(cfg: config_mod.Config) -> object:
    """A snapshot of the discovery section's subscriptions (ArmError when ARM cannot be read)."""
    from monitor.azure.arm import ArmReader, arm_credential

    d = cfg.discovery
    assert d is not None

    async def read() -> object:
        reader = ArmReader(d, arm_credential(d))
        try:
            return await reader.snapshot()
        finally:
            await reader.close()

    return asyncio.run(read())


def cmd_inventory(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from monitor.azure import inventory
    from monitor.azure.arm import ArmError, Snapshot

    cfg = load_config(args)
    if cfg.discovery is None:
        raise MonitorError(f"{cfg.source} has no discovery section: name the subscriptions to read "
                           "(see the commented discovery section of checks.yaml)")
    try:
        snap = _read_control_plane(cfg)
    except ArmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    assert isinstance(snap, Snapshot)
    rows = inventory.rows(snap, cfg.discovery, datetime.now(UTC))
    if args.format == "json":
        print(json.dumps({"taken_at": snap.taken_at.isoformat(), "deployments": rows,
                          "unread": list(snap.notes)}, indent=2))
        return EXIT_OK
    print(f"{len(rows)} Claude deployment(s) in {len(cfg.discovery.subscriptions)} subscription(s), "
          f"{sum(1 for r in rows if r['monitored'])} monitored")
    if rows:
        print(inventory.text_table(rows))
    for note in snap.notes:
        print(f"could not read {note}")
    return EXIT_OK


def _with_discovered(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` plus the deployments its discovery section finds (for `check`)."""
    if cfg.discovery is None:
        return cfg
    from monitor.azure import inventory
    from monitor.azure.arm import ArmError, Snapshot

    try:
        snap = _read_control_plane(cfg)
    except ArmError as exc:
        raise MonitorError(f"discovery: {exc}") from None
    assert isinstance(snap, Snapshot)
    return inventory.merged(cfg, inventory.resources(cfg, inventory.selected(snap, cfg.discovery)))


def cmd_validate(args: argparse.Namespace) -> int:
    from .app import check_shard, parse_shard

    cfg = load_config(args)
    check_shard(cfg, parse_shard(args.shard) if args.shard else None)
    rows = [("RESOURCE", "DEPLOYMENT", "MODEL", "ENDPOINT", "AUTH", "INTERVAL", "TIMEOUT")]
    for res, dep, s in cfg.targets():
        rows.append((res.name, dep.name, dep.model_id, res.messages_url, _auth_label(res),
                     format_duration(s.interval), format_duration(s.timeout)))
    print(f"{cfg.source}: ok, {len(rows) - 1} deployment(s) in {len(cfg.resources)} resource(s)")
    from monitor import ingestion  # what this config will cost, before it is deployed

    conn = cfg.telemetry.connection_string or os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    for line in ingestion.describe(ingestion.estimate(cfg), exporting=bool(conn)):
        print(line)
    print(format_table(rows))
    if cfg.discovery is not None:
        d = cfg.discovery
        print(f"discovery: every Claude deployment of {len(d.subscriptions)} subscription(s) "
              f"({', '.join(d.subscriptions)}), refreshed every {format_duration(d.refresh)}, "
              f"Entra ID ({d.credential}); `foundry-monitor inventory` lists them")
    return EXIT_OK


def _auth_label(res: config_mod.Resource) -> str:
    if res.auth is not None and res.auth.entra is not None:
        return "entra" + (" (managed identity)" if res.auth.entra.client_id else "")
    return f"api key ({res.api_key_header})"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.canary.fleet import build_fleet
    from monitor.canary.run import run_canary

    cfg = _with_discovered(load_config(args))
    only = set(args.deployment) if args.deployment else None
    if only:
        known = {dep.name for _, dep, _ in cfg.targets()}
        missing = sorted(only - known)
        if missing:
            from monitor.canary.suggest import close_name

            near = [f'"{m}"' for m in (close_name(n, known) for n in missing) if m]
            guess = f"did you mean {' or '.join(near)}? " if near else ""
            raise MonitorError(f"no deployment named {', '.join(missing)} in {cfg.source} "
                               f"({guess}known: {', '.join(sorted(known))})")

    async def round_() -> list[CanaryResult]:
        fleet = build_fleet(cfg, only)
        try:
            where = cfg.telemetry.location or ""
            runs = [run_canary(t, fleet.transports[t.resource], fleet.auths[t.resource], where)
                    for t in fleet.targets]
            return list(await asyncio.gather(*runs))
        finally:
            await fleet.aclose()

    results = asyncio.run(round_())
    if args.format == "json":
        print(json.dumps([result_json(r) for r in results], indent=2))
    else:
        print(format_results(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def result_json(r: CanaryResult) -> dict[str, object]:
    return {
        "resource": r.resource, "deployment": r.deployment, "model": r.model, "kind": r.kind.value,
        "ok": r.ok, "status_code": r.status_code, "latency_ms": _ms(r.timings.total_s),
        "ttft_ms": _ms(r.timings.ttft_s),
        "input_tokens": r.usage.input_tokens if r.usage else None,
        "output_tokens": r.usage.output_tokens if r.usage else None,
        "request_id": r.request_id, "apim_request_id": r.apim_request_id,
        "hint": None if r.ok else r.verdict.hint, "detail": r.detail,
    }


def format_results(results: Sequence[CanaryResult]) -> str:
    def cell(v: object) -> str:
        return "-" if v is None else str(v)

    head = ("RESOURCE", "DEPLOYMENT", "KIND", "STATUS", "LATENCY", "TTFT", "TOKENS", "REQUEST-ID",
            "APIM-REQUEST-ID")
    lines: list[str] = []
    rows = [head]
    for r in results:
        tokens = f"{r.usage.input_tokens}/{r.usage.output_tokens}" if r.usage else None
        lat, ttft = _ms(r.timings.total_s), _ms(r.timings.ttft_s)
        rows.append((r.resource, r.deployment, r.kind.value, cell(r.status_code),
                     f"{lat:.0f}ms" if lat is not None else "-", f"{ttft:.0f}ms" if ttft is not None else "-",
                     cell(tokens), cell(r.request_id), cell(r.apim_request_id)))
    table = format_table(rows).splitlines()
    lines.append(table[0])
    for r, line in zip(results, table[1:], strict=True):
        lines.append(line)
        if not r.ok:
            if r.detail:
                lines.append(f"    seen: {r.detail}")
            lines.append(f"    hint: {r.verdict.hint}")
    ok = sum(r.ok for r in results)
    lines.append(f"{ok}/{len(results)} ok")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from monitor.canary.fleet import in_shard
    from monitor.daemon.service import Daemon, Options
    from monitor.errors import StoreError
    from monitor.store.lease import Lease
    from monitor.store.recover import open_or_recover

    from . import logs, telemetry
    from .app import check_shard, data_dir, parse_shard, store_path

    cfg = load_config(args)
    shard = parse_shard(args.shard) if args.shard else None
    check_shard(cfg, shard)
    logs.setup(args.log_level or cfg.log_level, args.log_format)
    location = args.location or cfg.telemetry.location or ""
    # a damaged store is moved aside and a fresh one started (logged once the daemon runs)
    store, recovery = open_or_recover(store_path(cfg), datetime.now(UTC), timezone=cfg.reports.timezone)
    lease = Lease(store, [(r.name, d.name) for r, d, _ in cfg.targets() if in_shard(r.name, d.name, shard)],
                  shard=shard, location=location)
    try:
        try:
            lease.acquire()  # LeaseHeld: another live daemon probes these deployments with this store
        except StoreError as exc:  # a store that cannot be written: the daemon runs, and tries again
            lease.error = str(exc)
        tel = telemetry.build(cfg, data_dir(cfg), instance_id=store.instance_id(), location=location,
                              debug=args.telemetry_debug)
        tel.capture_logs(logging.getLogger(logs.LOGGER))
        opts = Options(config_path=args.config or config_mod.default_path(), shard=shard, location=location,
                       host=args.host, port=args.port, max_concurrency=args.max_concurrency)
        return asyncio.run(Daemon(cfg, store, opts, telemetry=tel, lease=lease, recovery=recovery).run())
    finally:
        if lease.held:  # the daemon releases it on a clean stop; this is for an early exit
            with contextlib.suppress(MonitorError):
                lease.release()
        store.close()


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from monitor.reports.build import build_report
    from monitor.reports.render import render

    from .app import build_report_source

    cfg = load_config(args)
    if args.days is not None and not 1 <= args.days <= 400:
        raise MonitorError("--days must be between 1 and 400")
    if args.timezone:
        try:
            ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise MonitorError(f'--timezone: unknown time zone "{args.timezone}"') from None
    source = build_report_source(cfg, args.source)
    if args.email:
        return _send_weekly(cfg, source, args.to)
    store = _control_plane_store(cfg, source)
    try:
        report = build_report(source, cfg, datetime.now(UTC), days=args.days, timezone=args.timezone,
                              to_now=True, store=store)
    finally:
        if store is not None:
            store.close()
    text = render(report, args.format)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise MonitorError(f"--output {args.output}: {exc.strerror}") from None
        print(f"report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _control_plane_store(cfg: config_mod.Config, source: ReportSource) -> Store | None:
    """With `discovery` and a source other than the local store: the local store, when there is one here
    (it alone keeps the control plane's changes and last inventory); the report says where they came from."""
    if cfg.discovery is None or source.name == "local":
        return None
    from monitor.store.sqlite import Store

    from .app import store_path

    path = store_path(cfg)
    return Store.open(path, timezone=cfg.reports.timezone) if path.exists() else None


def _send_weekly(cfg: config_mod.Config, source: ReportSource, to: list[str] | None) -> int:
    from datetime import UTC, datetime

    from monitor.notify.weekly import WEEK_DAYS, build_notifier, compose
    from monitor.reports.build import build_report

    from .notify import NotifyError

    recipients = tuple(to or cfg.reports.weekly.recipients)
    if not recipients:
        raise MonitorError("--email: no recipients; pass --to ADDR or set reports.weekly.recipients")
    if not cfg.email.sender:
        raise MonitorError("--email: set email.sender in the config")
    notifier = build_notifier(cfg)
    now = datetime.now(UTC)
    store = _control_plane_store(cfg, source)
    try:
        email = compose(build_report(source, cfg, now, days=WEEK_DAYS, store=store),
                        build_report(source, cfg, now, days=30), cfg.email.sender, recipients)
    finally:
        if store is not None:
            store.close()
    try:
        notifier.send(email)
    except NotifyError as exc:
        kind = "temporary" if exc.transient else "permanent"
        print(f"error: the email was not sent ({kind}): {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"sent \"{email.subject}\" to {', '.join(recipients)} via {notifier.name}", file=sys.stderr)
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    import httpx

    try:
        response = httpx.get(args.url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"unhealthy: {args.url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    if response.status_code != 200:
        print(f"unhealthy: {args.url} answered {response.status_code}", file=sys.stderr)
        return EXIT_FAILED
    print(f"healthy: {args.url}")
    return EXIT_OK
