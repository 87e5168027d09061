"""The weekly usage report email: what it says, and sending it exactly once per week.

Content: the last 7 whole days beside the 30-day rolling figures, per deployment; charts as PNG parts
referenced by cid: (rendered from the same SVG charts as the HTML report); a plain-text alternative
carrying the same numbers.

Exactly once: the period (its first and last day) is claimed in the store with one conditional write
before sending and marked `sent` after, so a restart does not resend, two processes sharing a store
never both send, and a send missed while the daemon was down goes out once at start-up if the
occurrence is within `reports.weekly.grace`. Only an unsharded daemon or shard 0 sends.
Transient failures are retried with exponential back-off until the grace runs out; a permanent one
is recorded and logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.config import Config
from monitor.config.schedule import last_occurrence
from monitor.logs import event
from monitor.reports import charts
from monitor.reports.build import period_for
from monitor.reports.control_plane import change_lines as control_plane_lines
from monitor.reports.model import Report
from monitor.reports.render import _ENV, AZURE_HEADER, azure_lines, azure_row, num, p3, pct, signed, usd
from monitor.store.sqlite import Store

from . import Email, Notifier, NotifyError

log = logging.getLogger("monitor.weekly")

JOB = "weekly_email"
WEEK_DAYS = 7
STALE_CLAIM_S = 15 * 60.0  # a claim left `sending` by a process that died is taken over after this
FIRST_RETRY_S, MAX_RETRY_S = 30.0, 15 * 60.0


@dataclass(frozen=True)
class Due:
    occurrence: datetime
    period: str  # "YYYY-MM-DD/YYYY-MM-DD": the seven days the email covers


def due(cfg: Config, now: datetime) -> Due | None:
    """The send that is due at `now` (the latest occurrence, if within the grace), else None."""
    weekly = cfg.reports.weekly
    at = last_occurrence(weekly.schedule, cfg.reports.timezone, now)
    if at is None or (now - at).total_seconds() > weekly.grace:
        return None
    p = period_for(at, WEEK_DAYS, cfg.reports.timezone)
    return Due(occurrence=at, period=f"{p.days[0][0]}/{p.days[-1][0]}")


# --- content ---------------------------------------------------------------------------------------


def subject(week: Report) -> str:
    o = week.overall
    first, last = week.overall.days[0].date, week.overall.days[-1].date
    return (f"foundry-monitor weekly: {o.slo_met}/{o.slo_judged} deployments met SLO · "
            f"{first} – {last}")


def compose(week: Report, month: Report, sender: str, to: tuple[str, ...],
            control_plane: tuple[str, ...] = ()) -> Email:
    """``control_plane``: the week's drift and retirement lines (with `discovery`), in words; by default
    those of the week's report."""
    if not control_plane and week.control_plane is not None:
        control_plane = tuple(f"{c.at[:10]} {c.text}" for c in week.control_plane.changes)
    labels = [d.date for d in week.overall.days]
    svgs = {
        "availability": charts.line_chart(
            "Availability per day (%)", labels,
            [charts.Series(f"{d.resource}/{d.deployment}", [x.availability_pct for x in d.days])
             for d in week.deployments], unit="%", ceiling=100.0),
        "latency": charts.line_chart(
            "Latency p95 per day", labels,
            [charts.Series(f"{d.resource}/{d.deployment}", [x.latency_ms.p95 for x in d.days])
             for d in week.deployments], unit=" ms", floor=0.0),
        "cost": charts.bar_chart("Canary cost per day (USD)", labels, [x.cost_usd for x in week.overall.days],
                                 color=charts.PALETTE[2]),
    }
    images = {cid: png(svg) for cid, svg in svgs.items()}
    rows = _rows(week, month)
    azure = [azure_row(v) for v in week.azure_view or ()]
    html = _ENV.get_template("weekly.html.j2").render(week=week, month=month, rows=rows, cids=list(images),
                                                      azure_header=AZURE_HEADER, azure=azure,
                                                      azure_lines=azure_lines(week),
                                                      control_plane=control_plane)
    body = text(week, month, rows)
    if control_plane:
        body += "\nChanges in Azure (drift, retirement, deployments added or removed):\n" + "".join(
            f"  {line}\n" for line in control_plane)
    return Email(sender=sender, to=to, subject=subject(week), text=body, html=html, images=images)


def png(svg: str) -> bytes:
    """A chart as PNG. resvg maps the generic sans-serif to Arial, absent on Debian: name DejaVu Sans
    (the image ships fonts-dejavu-core), or the charts lose every label."""
    from resvg_py import svg_to_bytes

    return bytes(svg_to_bytes(svg_string=svg, background="#ffffff", sans_serif_family="DejaVu Sans"))


def _rows(week: Report, month: Report) -> list[dict[str, str]]:
    by_key = {(d.resource, d.deployment): d for d in month.deployments}
    out = []
    for d in week.deployments:
        m = by_key.get((d.resource, d.deployment))
        out.append({
            "deployment": f"{d.resource}/{d.deployment}",
            "availability": pct(d.availability_pct),
            "availability_30d": pct(m.availability_pct if m else None),
            "slo": "no data" if d.slo_met is None else ("met" if d.slo_met else "MISSED"),
            "latency": p3(d.latency_ms), "ttft": p3(d.ttft_ms),
            "failures": ", ".join(f"{f.kind} × {f.count}" for f in d.failures) or "none",
            "incidents": str(len(d.incidents)),
            "tokens": f"{num(d.input_tokens)} in / {num(d.output_tokens)} out",
            "cost": usd(d.cost_usd), "cost_30d": usd(m.cost_usd if m else None),
            "change": ", ".join(x for x in (
                signed(d.change.availability_pct, lambda v: f"{v:.3f} pt availability"),
                signed(d.change.cost_usd, lambda v: f"${v:.4f} cost"),
                signed(d.change.output_tokens, lambda v: f"{v:.0f} output tokens")) if x) or "no change",
        })
    return out


def text(week: Report, month: Report, rows: list[dict[str, str]]) -> str:
    o, mo = week.overall, month.overall
    lines = [subject(week), "", f"Last 7 days ({week.start} to {week.end}, {week.timezone}) beside the last "
             f"30 days. SLO target {week.slo_target_pct}%.", "",
             f"All deployments: availability {pct(o.availability_pct)} "
             f"(30 days: {pct(mo.availability_pct)}), "
             f"latency p50/p95/p99 {p3(o.latency_ms)}, canary cost {usd(o.cost_usd)} "
             f"(30 days: {usd(mo.cost_usd)}).", ""]
    for r in rows:
        lines += [f"{r['deployment']}: availability {r['availability']} (30 days {r['availability_30d']}), "
                  f"SLO {r['slo']}", f"  latency {r['latency']}, TTFT {r['ttft']}",
                  f"  failures: {r['failures']}; incidents: {r['incidents']}",
                  f"  tokens {r['tokens']}, cost {r['cost']} (30 days {r['cost_30d']}); vs last week: "
                  f"{r['change']}", ""]
    if o.failures:
        lines.append("What to do about the failures:")
        lines += [f"  {f.kind}: {f.hint} (e.g. request-id {f.request_id or '-'}, apim-request-id "
                  f"{f.apim_request_id or '-'})" for f in o.failures]
        lines.append("")
    if week.real_usage is not None:
        lines.append("Real usage (all traffic, from platform metrics):")
        lines += [f"  {u.resource}: " + ("no platform metrics" if u.requests is None else
                  f"{num(u.requests)} requests, {num(u.input_tokens)} input / {num(u.output_tokens)} output "
                  f"tokens, est. {usd(u.estimated_cost_usd)}") for u in week.real_usage]
        lines.append("")
    if week.azure_view is not None:
        lines.append("Azure's view (all traffic per deployment, last 7 days) beside the canaries:")
        for cells in (azure_row(v) for v in week.azure_view):
            lines.append(f"  {cells[0]}: " + "; ".join(f"{h} {c}" for h, c in zip(AZURE_HEADER[1:], cells[1:],
                                                                                     strict=True)))
        lines += [f"  {line}" for line in azure_lines(week)] + [""]
    lines += [f"Note: {n}" for n in week.notes]
    return "\n".join(lines) + "\n"


# --- sending exactly once --------------------------------------------------------------------------

ReportMaker = Callable[[int, datetime], Report]  # (days, as of) -> Report; blocking, run in a thread


class WeeklyJob:
    """Checked by the daemon every minute (and at start); sends at most once per period."""

    def __init__(self, cfg: Config, store: Store, notifier: Notifier, make_report: ReportMaker, *,
                 now: Callable[[], datetime],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.cfg, self.store, self.notifier, self.make_report = cfg, store, notifier, make_report
        self.now, self.sleep = now, sleep
        self.sent: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        if self.task is not None and not self.task.done():
            return
        d = due(self.cfg, self.now())
        if d is None:
            return
        if not await asyncio.to_thread(self.store.claim, JOB, d.period, self.now(), STALE_CLAIM_S):
            return
        self.task = asyncio.create_task(self._send(d), name="weekly-email")

    async def wait(self) -> None:
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def _send(self, d: Due) -> None:
        weekly = self.cfg.reports.weekly
        deadline = d.occurrence + timedelta(seconds=weekly.grace)
        delay = FIRST_RETRY_S
        try:
            email = await asyncio.to_thread(self._compose, d.occurrence)
        except Exception as exc:  # noqa: BLE001 - a report that cannot be built is a failed send, not a crash
            self._failed(d, f"could not build the report: {type(exc).__name__}: {exc}")
            return
        while True:
            try:
                await asyncio.to_thread(self.notifier.send, email)
            except NotifyError as exc:
                if exc.transient and self.now() + timedelta(seconds=delay) < deadline:
                    event(log, logging.WARNING, f"weekly email not sent yet, retrying in {delay:.0f}s",
                          event="weekly_email", period=d.period, error=str(exc), transient=True)
                    await self.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_S)
                    continue
                self._failed(d, str(exc))
                return
            except asyncio.CancelledError:
                self.store.release(JOB, d.period)  # stopped mid-send: the next start tries again
                raise
            self.store.finish(JOB, d.period, "sent", self.now())
            self.sent.append(d.period)
            event(log, logging.INFO, f"weekly email sent to {len(email.to)} recipient(s)",
                  event="weekly_email", period=d.period, via=self.notifier.name, subject=email.subject)
            return

    def _compose(self, at: datetime) -> Email:
        """The email for the week before `at` (the occurrence, so a late send covers the same days)."""
        weekly = self.cfg.reports.weekly
        changes = control_plane_lines(self.store, at - timedelta(days=WEEK_DAYS), at) \
            if self.cfg.discovery is not None else ()
        return compose(self.make_report(WEEK_DAYS, at), self.make_report(30, at), self.cfg.email.sender or "",
                       tuple(weekly.recipients), changes)

    def _failed(self, d: Due, why: str) -> None:
        self.store.finish(JOB, d.period, "failed", self.now(), why)
        event(log, logging.ERROR, "weekly email failed; not retried for this period (check the email "
              "settings, then `foundry-monitor report --email` sends one by hand)", event="weekly_email",
              period=d.period, error=why, via=self.notifier.name)


def build_notifier(cfg: Config) -> Notifier:
    from monitor.errors import MonitorError

    if cfg.email.smtp is not None:
        from .smtp import SmtpNotifier

        return SmtpNotifier(cfg.email.smtp)
    if cfg.email.acs is not None:
        from .acs import AcsNotifier

        return AcsNotifier(cfg.email.acs)
    raise MonitorError("no email transport configured: set email.smtp or email.acs")
