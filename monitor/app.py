"""Wiring: config -> data directory, store path, shard, report source. The canaries' clients are built by
``canary.fleet``; the daemon, telemetry and notifier by the commands that run them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from monitor.config import Config
from monitor.config.yamlsource import load_document
from monitor.errors import ConfigError, ConfigProblem, MonitorError
from monitor.reports.loganalytics import WORKSPACE_ENV
from monitor.reports.source import ReportSource
from monitor.reports.sources import build_source
from monitor.store.sqlite import Store


def data_dir(cfg: Config) -> Path:
    """FOUNDRY_MONITOR_DATA_DIR, else the config's data_dir; created if missing, must be writable."""
    path = Path(os.environ.get("FOUNDRY_MONITOR_DATA_DIR") or cfg.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a unique probe file: several processes (daemon, report, check) may start at the same moment
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MonitorError(f"data_dir {path} is not writable ({exc.strerror}); set data_dir in the config "
                           "or FOUNDRY_MONITOR_DATA_DIR") from None
    return path


def store_path(cfg: Config) -> Path:
    return Path(cfg.store.path) if cfg.store.path else data_dir(cfg) / "results.sqlite3"


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` with 0 <= i < n."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise MonitorError(f'--shard expects i/n such as 0/3, got "{text}"') from None
    if not 0 <= i < n:
        raise MonitorError(f'--shard {text}: need 0 <= i < n')
    return i, n


def check_shard(cfg: Config, shard: tuple[int, int] | None) -> None:
    """Refuse a sharded fleet whose weekly email would be built from one shard's store: shard 0 would
    mail a report missing every other shard's deployments. Log Analytics holds all of them."""
    if shard is None or shard[1] < 2 or not cfg.reports.weekly.enabled:
        return
    if cfg.reports.workspace_id or os.environ.get(WORKSPACE_ENV):
        return
    key = ("reports", "weekly", "enabled")
    raise ConfigError([ConfigProblem(
        cfg.source, _line_of(cfg, key), ".".join(key),
        f"the weekly report is enabled but this daemon is shard {shard[0]}/{shard[1]}: its store holds only "
        "its share of the deployments, so the email would show the others as \"no data\". Set "
        f"reports.workspace_id (or {WORKSPACE_ENV}) to build it from Log Analytics, where every shard's "
        "canaries land (telemetry.connection_string on each shard), or set reports.weekly.enabled: false "
        "on sharded daemons")])


def _line_of(cfg: Config, key: tuple[str, ...]) -> int | None:
    """The line of ``key`` in the config file (or of the nearest key above it written there)."""
    try:
        text = Path(cfg.source).read_text(encoding="utf-8")
        return load_document(text, cfg.source, os.environ).line_of(key)
    except (OSError, UnicodeDecodeError, MonitorError):
        return None


def build_report_source(cfg: Config, name: str | None) -> ReportSource:
    """The report source `report` asks for; the local one opens the store the daemon writes."""

    def open_store() -> Store:
        path = store_path(cfg)
        if not path.exists():
            raise MonitorError(f"no results store at {path} yet: run the daemon first (foundry-monitor run), "
                               "or point data_dir / store.path at its data")
        return Store.open(path, timezone=cfg.reports.timezone)

    return build_source(cfg, name, open_store)
