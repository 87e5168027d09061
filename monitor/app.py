"""Wiring: config -> data directory, store path, shard, report source. The canaries' clients are built by
``canary.fleet``; the daemon, telemetry and notifier by the commands that run them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from monitor.config import Config
from monitor.errors import MonitorError
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


def build_report_source(cfg: Config, name: str | None) -> ReportSource:
    """The report source `report` asks for; the local one opens the store the daemon writes."""

    def open_store() -> Store:
        path = store_path(cfg)
        if not path.exists():
            raise MonitorError(f"no results store at {path} yet: run the daemon first (foundry-monitor run), "
                               "or point data_dir / store.path at its data")
        return Store.open(path, timezone=cfg.reports.timezone)

    return build_source(cfg, name, open_store)
