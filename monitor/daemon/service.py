"""The long-running job: schedule canaries, keep health, serve status, reload, stop cleanly.

Per canary: store first (nothing lost if an exporter is down), then log line and telemetry; the
confirmed result then moves the health state machine, whose transitions are logged and persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from monitor import config as config_mod
from monitor.azure.inventory import merged
from monitor.canary.fleet import Clients, Fleet, build_fleet
from monitor.canary.pricing import cost_usd
from monitor.canary.results import CanaryResult, FailureKind
from monitor.errors import ConfigError, LeaseHeld, MonitorError, StoreError
from monitor.logs import canary as canary_line
from monitor.logs import event
from monitor.store.lease import HEARTBEAT_S, Lease
from monitor.store.recover import Recovery
from monitor.store.sqlite import Store, result_row

from . import views
from .health import Change, HealthTracker, Incident, Key, State, Transition
from .live import LiveFleet
from .scheduler import CanaryScheduler
from .server import bound_port, build_app, build_server
from .writer import ResultWriter

if TYPE_CHECKING:  # the weekly email (jinja2, resvg) loads only when it is enabled
    from monitor.notify.weekly import WeeklyJob
    from monitor.reports.model import Report

log = logging.getLogger("monitor.daemon")

SNAPSHOT_EVERY_S = 15.0
PRUNE_EVERY_S = 3600.0
WEEKLY_EVERY_S = 60.0  # how often the weekly email schedule is checked
TICK_S = 1.0
# log_canaries: auto logs every canary up to this many deployments, failed ones only above: at 1,000
# deployments a line per ok canary is ~1.4 million lines a day that a container platform ships (and Log
# Analytics bills) as console logs, and about a twentieth of the daemon's CPU per canary
AUTO_CANARY_LINES_MAX = 50
FIRST_REFRESH_S = 30.0  # at start, how long the canaries wait for a first read of the control plane
STOP_BUDGET_S = 15.0  # SIGTERM to exit
CANARY_GRACE_S = 10.0  # part of it for canaries in flight; then they are cancelled (and recorded so)
STORE_STOP_S = 4.0  # part of it for the results still queued
TELEMETRY_FLUSH_S = 5.0  # part of it for telemetry: what is not sent by then stays in offline storage
# The event loop thread times every canary. Each time it comes back from I/O while a background thread
# (telemetry export, the store writer) holds the GIL, it waits up to the switch interval, and the wait
# lands in the measured latency. Python's 5 ms default made the latency error p99 30 ms with Azure
# Monitor export at 100 canaries/s; 1 ms makes it 7 ms at no measurable CPU cost (bench/daemon_bench.py).
SWITCH_INTERVAL_S = 0.001
# A canary leaves a few hundred container objects to the cyclic garbage collector. At Python's default
# (a young collection every 700 allocations) it ran some 13 young, 1.2 middle and 0.1 full collections a
# second at 100 canaries/s, a full one scanning everything made since start-up. Every 10,000: a third of
# the collector's CPU, 7 % less CPU per canary with Azure Monitor export (bench/blackbox_bench.py runs,
# two pairs), each young collection ~1 ms (bench/daemon_bench.py --telemetry for the latency error).
GC_YOUNG_THRESHOLD = 10_000


class Telemetry(Protocol):
    """The telemetry seam as the daemon sees it (monitor.telemetry.OtelTelemetry is the real one)."""

    def fleet(self, cfg: config_mod.Config, states: Mapping[Key, State]) -> None: ...

    def record(self, result: CanaryResult, cost: float | None) -> None: ...

    def transition(self, t: Transition) -> None: ...

    def reloaded(self, ok: bool) -> None: ...

    def event(self, name: str, attributes: Mapping[str, Any], at: datetime) -> None: ...

    def metrics(self) -> bytes: ...

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


class NullTelemetry:
    """No telemetry at all (tests of other parts; `/metrics` is then empty)."""

    def fleet(self, cfg: config_mod.Config, states: Mapping[Key, State]) -> None: ...

    def record(self, result: CanaryResult, cost: float | None) -> None: ...

    def transition(self, t: Transition) -> None: ...

    def reloaded(self, ok: bool) -> None: ...

    def event(self, name: str, attributes: Mapping[str, Any], at: datetime) -> None: ...

    def metrics(self) -> bytes:
        return b""

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


@dataclass
class Options:
    config_path: str
    shard: tuple[int, int] | None = None
    location: str = ""
    host: str | None = None
    port: int | None = None
    max_concurrency: int = 64
    seed: int | None = None  # back-off jitter; fixed in tests
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class Daemon:
    def __init__(self, cfg: config_mod.Config, store: Store, opts: Options,
                 telemetry: Telemetry | None = None, lease: Lease | None = None,
                 recovery: Recovery | None = None) -> None:
        self.base_cfg = cfg  # as written; self.cfg adds the discovered resources (the config that runs)
        self.opts = opts
        self.store = store
        self.telemetry: Telemetry = telemetry or NullTelemetry()
        self.live = LiveFleet(cfg.discovery, store, self.telemetry, opts.now) if cfg.discovery else None
        self.cfg = merged(cfg, self.live.resources(cfg)) if self.live else cfg  # the last fleet at first
        self.writer = ResultWriter(store, max_pending=cfg.store.max_pending)
        self.lease = lease  # held on the store while running (released at stop); None: not checked
        self.recovery = recovery  # the damaged store moved aside at start, if any
        self.exit_code = 0
        self._store_failing: set[str] = set()  # store writes (other than results) failing right now
        # its own snapshot (per shard and location); until it has one, the one replicas used to share
        snapshot = store.get_state(self._snapshot_name()) or store.get_state("health")
        self.health = HealthTracker.restore(snapshot or {})

        self.health.reconcile(_stored_incidents(store))
        self.fleet = build_fleet(self.cfg, shard=opts.shard, max_concurrency=opts.max_concurrency)
        self.scheduler = CanaryScheduler(self.fleet, self, max_concurrency=opts.max_concurrency,
                                         location=opts.location, now=opts.now,
                                         rng=random.Random(opts.seed))  # noqa: S311 - jitter only
        # only the latest per deployment stays in memory (history is in the store): memory does not grow
        # with the number of canaries, only with the number of deployments
        self.last: dict[tuple[str, str], CanaryResult] = {}
        self.last_failure: dict[tuple[str, str], CanaryResult] = {}
        self.counts: dict[tuple[str, str], list[int]] = {}  # [canaries, failures] since start
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_ok = True
        self.last_reload_error: str | None = None
        self.started_at = opts.now()
        self.port: int | None = None
        self._running = False
        self._dirty = False
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._retired: list[tuple[float, Fleet]] = []  # (close at, fleet) replaced by a reload
        self._refresh_now = asyncio.Event()  # the live fleet wants an early refresh
        self._maybe_gone_keys: set[Key] = set()
        self.weekly = self._weekly_job()
        from monitor.reports.status_page import AzureToday

        self.azure_today = AzureToday()  # Azure's view on the status page, cached

    # --- ResultSink ------------------------------------------------------------------------------

    def record(self, r: CanaryResult) -> None:
        cost = cost_usd(r.model, r.usage) if r.usage else None
        self.writer.put(result_row(r, cost))
        if not r.ok or self.every_canary_logged():
            canary_line(log, r)
        self.telemetry.record(r, cost)
        key = (r.resource, r.deployment)
        self.last[key] = r
        self._dirty = True  # the snapshot carries last-result times and streaks: keep it fresh (every 15 s)
        counts = self.counts.setdefault(key, [0, 0])
        counts[0] += 1
        if not r.ok:
            self.last_failure[key] = r
            counts[1] += 1

    def every_canary_logged(self) -> bool:
        """Whether ok canaries get a log line too (``log_canaries``); failed ones always do."""
        mode = self.cfg.log_canaries
        return mode == "all" or (mode == "auto" and len(self.fleet.targets) <= AUTO_CANARY_LINES_MAX)

    def confirmed(self, r: CanaryResult) -> None:
        target = self.fleet.by_key.get((r.resource, r.deployment))
        if target is None:  # removed by a reload while it ran
            return
        if self._maybe_gone(r):
            return
        change = self.health.observe(r, target.settings, self.opts.now())
        if change is not None:
            self._changed(change)

    def expect_every(self, key: Key, interval_s: float) -> None:
        target = self.fleet.by_key.get(key)
        if target is not None:
            self.health.expect(key, interval_s, target.settings.timeout)

    def _changed(self, change: Change) -> None:
        t = change.transition
        self._log_transition(t)
        if change.opened is not None:
            i = change.opened
            self._persist("incident", self.store.open_incident, i.key[0], i.key[1], i.state.value,
                          i.started_at, i.kind.value, i.hint, i.request_id, i.apim_request_id)
        if change.closed is not None and change.closed.ended_at is not None:
            i = change.closed
            self._persist("incident", self.store.close_incident, i.key[0], i.key[1], i.state.value,
                          i.ended_at)
        self._dirty = True

    def _log_transition(self, t: Transition) -> None:
        level = logging.WARNING if t.new.value in ("down", "throttled") else logging.INFO
        event(log, level, f"{t.key[1]}: {t.previous.value} -> {t.new.value}", **t.log_fields())
        self._persist("transition", self.store.add_transition, t.key[0], t.key[1], t.at, t.previous.value,
                      t.new.value, t.kind.value if t.kind else None, t.hint, t.request_id, t.apim_request_id,
                      t.reason)
        self.telemetry.transition(t)

    def _persist(self, what: str, write: Callable[..., Any], *args: Any) -> bool:
        """A store write other than results: when the store refuses it, the daemon goes on (the state
        stays in memory) and says so once, and once more when such writes land again."""
        try:
            write(*args)
        except (StoreError, sqlite3.Error) as exc:
            self._store_failed(what, exc)
            return False
        self._store_ok(what)
        return True

    def _store_failed(self, what: str, exc: Exception) -> None:
        if what not in self._store_failing:
            self._store_failing.add(what)
            event(log, logging.ERROR, f"the store cannot be written ({what}); the daemon goes on",
                  event="store_write_failed", what=what, error=str(exc), store=self.store.path)

    def _store_ok(self, what: str) -> None:
        if what in self._store_failing:
            self._store_failing.discard(what)
            event(log, logging.WARNING, f"the store is written again ({what})", event="store_write_ok",
                  what=what, store=self.store.path)

    def _snapshot_name(self) -> str:
        """The health snapshot's state key: its own per shard and location, as replicas may share a store."""
        shard = f"{self.opts.shard[0]}/{self.opts.shard[1]}" if self.opts.shard else ""
        return "health" if not shard and not self.opts.location else f"health:{shard}:{self.opts.location}"

    def store_status(self) -> dict[str, Any]:
        """The store for /status: whether results are written, how many wait or were dropped."""
        out: dict[str, Any] = {"path": self.store.path, **self.writer.status(),
                               "failing": sorted(self._store_failing)}
        if self.recovery is not None:
            out["recovered_from_damage"] = {"moved_to": self.recovery.damaged, "error": self.recovery.error}
        return out

    def _maybe_gone(self, r: CanaryResult) -> bool:
        """A discovered deployment answering DeploymentNotFound may have been deleted: the first such
        answer since the last refresh does not count, and the control plane is read again soon, so a
        deleted deployment is reported as removed, never as down."""
        if self.live is None or r.kind is not FailureKind.DEPLOYMENT_NOT_FOUND \
                or r.resource not in self.live.owners.values():
            return False
        key = (r.resource, r.deployment)
        if key in self._maybe_gone_keys:
            return False
        self._maybe_gone_keys.add(key)
        self.live.soon(asyncio.get_running_loop().time())
        self._refresh_now.set()
        return True

    # --- StatusSource ----------------------------------------------------------------------------

    def alive(self) -> bool:
        return self._running and not self._stop.is_set()

    def ready(self) -> bool:
        return self.alive() and all(t.key in self.last for t in self.fleet.targets)

    def metrics(self) -> bytes:
        return self.telemetry.metrics()

    def status(self) -> dict[str, Any]:
        states, sched = self.health.states(), self.scheduler
        return {
            "service": "foundry-monitor", "started_at": views.iso(self.started_at),
            "location": self.opts.location,
            "shard": f"{self.opts.shard[0]}/{self.opts.shard[1]}" if self.opts.shard else None,
            "ready": self.ready(),
            "deployments": [views.deployment(t, states.get(t.key), self.last.get(t.key),
                                             self.last_failure.get(t.key), self.counts.get(t.key, [0, 0]),
                                             sched.interval_of(t.key), sched.next_run(t.key))
                            for t in self.fleet.targets],
            "open_incidents": [views.incident(i) for i in self.health.open_incidents()],
            "reloads": {**self.reloads, "last_ok": self.last_reload_ok, "last_error": self.last_reload_error},
            "store": self.store_status(),
            **self._discovery_status(states),
        }

    def _discovery_status(self, states: Mapping[Key, Any]) -> dict[str, Any]:
        if self.live is None:
            return {}
        throttled = {k for k, v in states.items() if v.state is State.THROTTLED}
        return {"discovery": self.live.status(), "inventory": self.live.inventory(throttled)}

    def page(self) -> str:
        """The status page (runs in a worker thread: it reads recent results and the last day's rollups)."""
        from monitor.reports.status_page import render_status

        now = self.opts.now()
        azure = self.azure_today.get(self.cfg, self.store, now)
        return render_status(self.status(), self.store, now, azure, self.azure_today.note)

    def debug(self, deployment: str) -> dict[str, Any] | None:
        t = next((t for t in self.fleet.targets
                  if t.deployment == deployment or f"{t.resource}/{t.deployment}" == deployment), None)
        if t is None:
            return None
        res = next(r for r in self.cfg.resources if r.name == t.resource)
        return views.debug(t, res, self.last.get(t.key), self.store)

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        srv = self.cfg.server
        app = build_app(self, debug_endpoints=srv.debug_endpoints, token=srv.bearer_token)
        port = srv.port if self.opts.port is None else self.opts.port
        server = build_server(app, self.opts.host or srv.host, port)
        serve = asyncio.create_task(server.serve(), name="http-server")
        while not server.started and not serve.done():
            await asyncio.sleep(0.01)
        if serve.done():
            raise MonitorError(f"cannot listen on {server.config.host}:{server.config.port} (address in use, "
                               "or not allowed); set server.port or --port")
        self.port = bound_port(server)
        self._warn_exposure()
        self._announce_store()
        self._announce_takeover()
        self.writer.start()
        if self.live is not None and self.live.snapshot is None:
            # the first round includes the discovered deployments, unless ARM is slow: then they join
            # at the refresh that completes (hand-listed deployments do not wait longer than this)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh(), FIRST_REFRESH_S)
        self._expect_all()
        self._tell_telemetry()
        _freeze_startup_objects()  # before the first canary is due: the collection it starts with pauses
        self.scheduler.start()
        self._running = True
        event(log, logging.INFO, "started", event="started", deployments=len(self.fleet.targets),
              port=self.port, location=self.opts.location or None,
              canary_lines="every canary" if self.every_canary_logged() else "failed canaries only")
        switch_interval, gc_thresholds = sys.getswitchinterval(), gc.get_threshold()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc_thresholds[1:])
        try:
            await self._loop()
        finally:
            await self._shutdown(server, serve)
            sys.setswitchinterval(switch_interval)
            gc.set_threshold(*gc_thresholds)
        return self.exit_code

    def _announce_store(self) -> None:
        """Log (and so export) what start-up did to the store: a damaged one moved aside, a stale lease."""
        if self.recovery is not None:
            event(log, logging.ERROR, "the store was damaged: it is kept aside and a fresh one is in use; "
                  "results before this start are in the kept file", store=self.store.path,
                  **self.recovery.fields())

    def _announce_takeover(self) -> None:
        if self.lease is not None and self.lease.error is not None:  # tried again at every heartbeat
            self._store_failed("lease", StoreError(self.lease.error))
        for holder, why in self.lease.taken_over if self.lease is not None else []:
            event(log, logging.WARNING, f"took over the store's lease from a daemon that is gone ({why})",
                  event="lease_taken_over", holder_pid=holder.pid, holder_host=holder.host,
                  holder_shard=holder.shard or None, store=self.store.path)

    async def _heartbeat(self) -> None:
        """Renew the lease; if it was taken over meanwhile (this daemon stalled past its expiry), take it
        again, or stop when another daemon now probes these deployments."""
        lease = self.lease
        if lease is None:
            return
        keys = list(self.fleet.by_key)
        try:
            if await asyncio.to_thread(lease.renew, keys):
                self._store_ok("lease")
                return
            await asyncio.to_thread(lease.acquire)
            self._store_ok("lease")
            self._announce_takeover()
        except LeaseHeld as exc:
            event(log, logging.ERROR, "the store's lease was taken over by another daemon while this one "
                  "stalled; stopping so that canaries are not doubled", event="lease_lost", error=str(exc))
            self.exit_code = 2
            self.request_stop()
        except StoreError as exc:
            self._store_failed("lease", exc)

    def _weekly_job(self) -> WeeklyJob | None:
        """The weekly email, when enabled; only an unsharded daemon or shard 0 sends it."""
        if not self.cfg.reports.weekly.enabled or (self.opts.shard is not None and self.opts.shard[0] != 0):
            return None
        from monitor.notify.weekly import WeeklyJob, build_notifier
        from monitor.reports.build import build_report
        from monitor.reports.sources import build_source

        def make_report(days: int, at: datetime) -> Report:
            source = build_source(self.cfg, None, lambda: self.store)
            return build_report(source, self.cfg, at, days=days, store=self.store)

        return WeeklyJob(self.cfg, self.store, build_notifier(self.cfg), make_report, now=self.opts.now)

    async def _loop(self) -> None:
        last_snapshot = last_prune = last_weekly = 0.0
        clock = asyncio.get_running_loop().time
        last_heartbeat = clock()
        while not self._stop.is_set():
            if clock() - last_heartbeat >= HEARTBEAT_S:
                last_heartbeat = clock()
                await self._heartbeat()
            if clock() - last_prune >= PRUNE_EVERY_S or last_prune == 0.0:
                last_prune = clock()
                await self._prune()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_any(), TICK_S)
            if self._reload.is_set():
                self._reload.clear()
                await self.reload()
            if self.live is not None and (self._refresh_now.is_set() or self.live.due(clock())):
                self._refresh_now.clear()
                if self.live.due(clock()):
                    await self._refresh()
            await self._close_retired()
            for t in self.health.check_silence(self.opts.now()):
                self._log_transition(t)
                self._dirty = True
            if self.weekly is not None and clock() - last_weekly >= WEEKLY_EVERY_S:
                last_weekly = clock()
                await self.weekly.tick()
            if self._dirty and clock() - last_snapshot >= SNAPSHOT_EVERY_S:
                await self._save_snapshot()
                last_snapshot = clock()

    async def _wait_any(self) -> None:
        waits = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._reload.wait()),
                 asyncio.create_task(self._refresh_now.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _prune(self) -> None:
        s = self.cfg.store
        try:
            deleted = await asyncio.to_thread(self.store.prune, self.opts.now(), s.raw_retention,
                                              s.rollup_retention)
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping; never stop the daemon for it
            event(log, logging.WARNING, "store pruning failed; will retry in an hour", event="prune",
                  error=str(exc))
            return
        if any(deleted.values()):
            event(log, logging.INFO, "old results pruned", event="prune", **deleted)

    async def _save_snapshot(self) -> None:
        self._dirty = False
        snap = self.health.snapshot()
        try:
            await asyncio.to_thread(self.store.put_state, self._snapshot_name(), snap, self.opts.now())
        except (StoreError, sqlite3.Error) as exc:
            self._dirty = True  # tried again at the next snapshot
            self._store_failed("health snapshot", exc)
        else:
            self._store_ok("health snapshot")

    async def _shutdown(self, server: Any, serve: asyncio.Task[None]) -> None:
        """Everything within STOP_BUDGET_S: canaries in flight get up to CANARY_GRACE_S, the store and
        telemetry share what is left (each bounded), so SIGTERM ends the process in time even when the
        disk or the telemetry backend does not answer."""
        self._running = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET_S - 0.5  # the last half second is the interpreter's exit

        def left(cap: float) -> float:
            return max(0.0, min(cap, deadline - loop.time()))

        await self.scheduler.stop(min(CANARY_GRACE_S, max((t.settings.timeout for t in self.fleet.targets),
                                                          default=1.0)))
        if self.weekly is not None and self.weekly.task is not None:
            self.weekly.task.cancel()  # a send cut short is released and tried again at the next start
            await self.weekly.wait()
        await self.writer.stop(left(STORE_STOP_S))
        with contextlib.suppress(TimeoutError):  # the last snapshot (at most 15 s old) stays if this is late
            await asyncio.wait_for(self._save_snapshot(), left(1.0))
        await self.fleet.aclose()
        await self._close_retired(everything=True)
        if self.live is not None:
            await self.live.close()
        with contextlib.suppress(TimeoutError):  # what is not sent stays in offline storage for next time
            await asyncio.wait_for(asyncio.to_thread(self.telemetry.shutdown, left(TELEMETRY_FLUSH_S)),
                                   left(TELEMETRY_FLUSH_S) + 0.2)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, left(3.0))
        if self.lease is not None and self.lease.held:
            with contextlib.suppress(StoreError):  # not released: it expires on its own
                await asyncio.to_thread(self.lease.release)
        event(log, logging.INFO, "stopped", event="stopped", results_written=self.writer.written,
              results_lost=self.writer.lost, results_dropped=self.writer.dropped or None)

    async def reload(self) -> bool:
        try:
            new = config_mod.load(self.opts.config_path)
        except ConfigError as exc:
            return self._reload_failed(str(exc))
        live = self.live
        if new.discovery != self.base_cfg.discovery:  # other subscriptions or filters: a fleet of its own
            live = LiveFleet(new.discovery, self.store, self.telemetry, self.opts.now) \
                if new.discovery else None
        try:
            added, removed = self._swap(merged(new, live.resources(new)) if live else new)
        except Exception as exc:  # noqa: BLE001 - whatever the new config trips on, the old one keeps running
            if live is not None and live is not self.live:
                await live.close()
            return self._reload_failed(f"cannot schedule the new config: {type(exc).__name__}: {exc}")
        if live is not self.live:
            if self.live is not None:
                await self.live.close()
            self.live = live
            self._refresh_now.set()  # read the control plane with the new settings at once
        self.base_cfg = new
        self.telemetry.reloaded(True)
        self.reloads["ok"] += 1
        self.last_reload_ok, self.last_reload_error = True, None
        event(log, logging.INFO, "config reloaded", event="reload", ok=True, added=len(added),
              removed=len(removed), deployments=len(self.fleet.targets))
        return True

    def _swap(self, new: config_mod.Config) -> tuple[list[Key], list[Key]]:
        """Run ``new``: new deployments are scheduled, removed ones stop (their health is forgotten, not
        marked down), unchanged ones keep their schedule and state. Raises with the old config running."""
        old_fleet = self.fleet
        taken: dict[str, Clients] = {}
        try:
            fleet = build_fleet(new, shard=self.opts.shard, max_concurrency=self.opts.max_concurrency,
                                reuse=_reuse_clients(self.cfg, old_fleet, taken))
            added, removed = self.scheduler.replace(fleet)
        except Exception:
            for name, (transport, auth) in taken.items():  # the old fleet runs on: give its clients back
                old_fleet.transports[name], old_fleet.auths[name] = transport, auth
            self.scheduler.replace(old_fleet)
            raise
        self.cfg, self.fleet = new, fleet
        for key in removed:
            if key not in fleet.by_key:
                closed = self.health.forget(key, self.opts.now())
                if closed is not None and closed.ended_at is not None:
                    self._persist("incident", self.store.close_incident, key[0], key[1], closed.state.value,
                                  closed.ended_at)
        self._expect_all()
        self._tell_telemetry()
        # canaries already running on the old clients finish first; shutdown closes whatever is still here
        grace = max((t.settings.timeout for t in old_fleet.targets), default=1.0) + 1.0
        self._retired.append((asyncio.get_running_loop().time() + grace, old_fleet))
        gc.unfreeze()  # frozen again once the old fleet is closed and collected (_close_retired)
        return added, removed

    async def _refresh(self) -> None:
        """Read the control plane; when the discovered fleet changed, run it (a failed read keeps it)."""
        assert self.live is not None
        try:
            found = await self.live.refresh(self.base_cfg, asyncio.get_running_loop().time())
        except Exception as exc:  # noqa: BLE001 - a bug in reading ARM must not stop the canaries
            event(log, logging.ERROR, "discovery refresh failed; the last known fleet keeps running",
                  event="discovery", ok=False, error=f"{type(exc).__name__}: {exc}")
            found = None
        if found is None:
            return
        self._maybe_gone_keys.clear()  # read again: a deployment still listed that answers 404 now counts
        new = merged(self.base_cfg, found)
        if new.resources == self.cfg.resources:
            return
        try:
            added, removed = self._swap(new)
        except Exception as exc:  # noqa: BLE001 - the last fleet keeps running
            event(log, logging.ERROR, "cannot schedule the discovered fleet; the last one keeps running",
                  event="discovery", ok=False, error=f"{type(exc).__name__}: {exc}")
            return
        gone = [k for k in removed if k not in self.fleet.by_key]
        new_keys = [k for k in added if k not in set(removed)]
        event(log, logging.INFO, "discovered fleet changed", event="fleet", added=len(new_keys),
              removed=len(gone), deployments=len(self.fleet.targets),
              added_names=[f"{k[0]}/{k[1]}" for k in new_keys][:20],
              removed_names=[f"{k[0]}/{k[1]}" for k in gone][:20])

    def _reload_failed(self, error: str) -> bool:
        self.reloads["failed"] += 1
        self.last_reload_ok, self.last_reload_error = False, error
        self.telemetry.reloaded(False)
        event(log, logging.ERROR, "reload failed; the previous config keeps running", event="reload",
              ok=False, error=error)
        return False

    async def _close_retired(self, everything: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        due = [f for at, f in self._retired if everything or at <= now]
        if not due:
            return
        self._retired = [(at, f) for at, f in self._retired if f not in due]
        while due:  # popped: no reference is left for the collection below
            await due.pop().aclose()
        if not self._retired and not everything:
            _freeze_startup_objects()

    def _tell_telemetry(self) -> None:
        self.telemetry.fleet(self.cfg, {key: view.state for key, view in self.health.states().items()})

    def _expect_all(self) -> None:
        for t in self.fleet.targets:
            self.health.expect(t.key, self.scheduler.interval_of(t.key) or t.settings.interval,
                               t.settings.timeout)

    def _warn_exposure(self) -> None:
        host = self.opts.host or self.cfg.server.host
        if host not in ("127.0.0.1", "::1", "localhost") and not self.cfg.server.bearer_token:
            event(log, logging.WARNING, "the HTTP server listens beyond loopback without "
                  "server.bearer_token; /status and /debug are open to anyone who can reach it",
                  event="exposure", host=host)


def _reuse_clients(old_cfg: config_mod.Config, old: Fleet,
                   taken: dict[str, Clients]) -> Callable[[config_mod.Resource], Clients | None]:
    """A resource whose endpoint and credentials did not change keeps its connection pool and credential
    across a reload or a discovery refresh: its canaries keep their warm connections and cached token,
    and the swap builds no TLS context (tens of milliseconds each: 2 s for 50 accounts). What is handed
    over is taken out of the old fleet (which closes the rest) and noted in ``taken``."""
    before = {r.name: (r.endpoint, r.auth, r.api_key_header) for r in old_cfg.resources}

    def reuse(res: config_mod.Resource) -> Clients | None:
        name = res.name
        if name not in old.transports or name not in old.auths \
                or before.get(name) != (res.endpoint, res.auth, res.api_key_header):
            return None
        taken[name] = (old.transports.pop(name), old.auths.pop(name))
        return taken[name]

    return reuse


def _stored_incidents(store: Store) -> list[Incident]:
    out = []
    for row in store.open_incidents():
        try:
            state, kind = State(row["kind"]), FailureKind(row["first_kind"])
        except ValueError:
            continue  # written by a newer version: left as it is
        out.append(Incident((row["resource"], row["deployment"]), state,
                            datetime.fromtimestamp(row["started_at"], UTC), kind, row["hint"] or "",
                            row["request_id"], row["apim_request_id"]))
    return out


def _freeze_startup_objects() -> None:
    """Move the long-lived objects built at start (fleet, jobs, config) out of the garbage collector's
    reach, so each collection scans only what canaries allocate (measured in bench/daemon_bench.py).
    What start-up (or a reload, once the old fleet is closed) left behind is collected first: frozen
    garbage would never be freed. The collection takes some 20 ms with 1,000 deployments."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
