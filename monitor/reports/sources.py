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
    return with_platform_metrics(cfg, _base_source(cfg, name, open_store))


def with_platform_metrics(cfg: Config, source: ReportSource) -> ReportSource:
    """``source`` plus Azure's own view (platform metrics per deployment) for every resource that names
    its azure_resource_id, unless reports.metrics.enabled is false."""
    resources = {r.name: r.azure_resource_id for r in cfg.resources if r.azure_resource_id}
    if not resources or not cfg.reports.metrics.enabled:
        return source
    from monitor.azure.metrics import MetricsReader, credential_for

    from .platform import PlatformSource

    m = cfg.reports.metrics
    reader = MetricsReader(credential_for(m.credential, m.client_id), endpoint=m.endpoint)
    return PlatformSource(source, reader, resources)


def _base_source(cfg: Config, name: str | None, open_store: Callable[[], Store]) -> ReportSource:
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
