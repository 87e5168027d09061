"""Which report source to build: `local` (the embedded store) or `log-analytics` (a workspace)."""

from __future__ import annotations

import os
from collections.abc import Callable

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.store.sqlite import Store

from .source import ReportSource

NAMES = ("local", "log-analytics")


def build_source(cfg: Config, name: str | None, open_store: Callable[[], Store]) -> ReportSource:
    """`name`, or by default Log Analytics when a workspace is set and the local store otherwise;
    ``open_store`` gives the local store (the daemon's own, or one opened for `report`)."""
    from .local import LocalSource
    from .loganalytics import WORKSPACE_ENV, LogAnalyticsSource, credential_for

    workspace = cfg.reports.workspace_id or os.environ.get(WORKSPACE_ENV)
    name = name or ("log-analytics" if workspace else "local")
    if name == "log-analytics":
        if not workspace:
            raise MonitorError(f"--source log-analytics needs reports.workspace_id in the config or "
                               f"{WORKSPACE_ENV} (the workspace GUID)")
        return LogAnalyticsSource(workspace, credential_for(cfg.reports.credential, cfg.reports.client_id),
                                  endpoint=cfg.reports.endpoint)
    return LocalSource(open_store())
