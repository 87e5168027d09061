"""Report renderers: text (terminal), markdown, html (self-contained, inline SVG charts), json, csv."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from . import FORMATS, charts
from .model import AzureView, ControlPlane, DeploymentReport, Headroom, InventoryRow, Percentiles, Report

TEXT_INCIDENTS = 15  # the terminal shows the latest ones; every other format lists them all


__all__ = ["FORMATS", "render"]


def render(report: Report, fmt: str) -> str:
    renderers: dict[str, Callable[[Report], str]] = {
        "text": text, "markdown": markdown, "html": html, "csv": csv_text,
        "json": lambda r: r.model_dump_json(indent=2) + "\n"}
    return renderers[fmt](report)


# --- shared cell formatting --------------------------------------------------------------------------


def pct(v: float | None) -> str:
    return "no data" if v is None else f"{v:.3f}%".replace(".000%", "%")


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def signed(v: float | None, fmt: Callable[[float], str]) -> str:
    return "" if v is None or v == 0 else ("+" if v > 0 else "−") + fmt(abs(v))


def p3(p: Percentiles) -> str:
    return " / ".join(ms(v).replace(" ms", "") for v in (p.p50, p.p95, p.p99)) + " ms" \
        if p.p50 is not None else "-"


def slo(d: DeploymentReport) -> str:
    return "no data" if d.slo_met is None else ("met" if d.slo_met else "MISSED")


def summary_rows(report: Report) -> list[list[str]]:
    rows = [["resource", "deployment", "availability", "SLO", "unknown time", "latency p50/p95/p99",
             "TTFT p50/p95/p99", "out tok/s", "failures", "incidents", "tokens in/out", "cost",
             "vs previous"]]
    for d in report.deployments:
        rows.append([d.resource, d.deployment, pct(d.availability_pct), slo(d), pct(d.state_pct["unknown"]),
                     p3(d.latency_ms), p3(d.ttft_ms), num(d.output_tokens_per_s),
                     str(sum(f.count for f in d.failures)), str(len(d.incidents)),
                     f"{num(d.input_tokens)}/{num(d.output_tokens)}", usd(d.cost_usd), _change(d)])
    o = report.overall
    rows.append(["all", f"{o.deployments} deployments", pct(o.availability_pct),
                 f"{o.slo_met}/{o.slo_judged} met", "", p3(o.latency_ms), p3(o.ttft_ms), "",
                 str(sum(f.count for f in o.failures)), str(len(report.incidents)),
                 f"{num(o.input_tokens)}/{num(o.output_tokens)}", usd(o.cost_usd), ""])
    return rows


AZURE_HEADER = ["deployment", "real requests", "429", "other 4xx", "5xx", "tokens in/out/cache", "est. cost",
                "availability (Azure · canary)", "TTFT (Azure avg · canary p50/p95)", "canary share",
                "source"]


def nodata(v: float | None, fmt: Callable[[float], str]) -> str:
    return "no data" if v is None else fmt(v)


def _count_pct(n: float | None, p: float | None) -> str:
    return "no data" if n is None else f"{n:,.0f} ({pct(p)})" if p is not None else f"{n:,.0f}"


def azure_row(v: AzureView) -> list[str]:
    """One deployment's Azure view as table cells; every unread figure says `no data`."""
    cache = None if v.cache_read_tokens is None and v.cache_write_tokens is None else \
        (v.cache_read_tokens or 0.0) + (v.cache_write_tokens or 0.0)
    tokens = "no data" if v.input_tokens is None and v.output_tokens is None else \
        f"{nodata(v.input_tokens, num)}/{nodata(v.output_tokens, num)}/{nodata(cache, num)}"
    ttft_azure = nodata(v.ttft_ms, lambda x: f"{x:.0f} ms")
    canary_ttft = "no data" if v.canary_ttft_ms.p50 is None else \
        f"{v.canary_ttft_ms.p50:.0f} / {ms(v.canary_ttft_ms.p95)}"
    return [f"{v.resource}/{v.deployment}", nodata(v.requests, num), _count_pct(v.throttled, v.throttled_pct),
            _count_pct(v.client_errors, v.client_errors_pct),
            _count_pct(v.server_errors, v.server_errors_pct), tokens, nodata(v.estimated_cost_usd, usd),
            f"{pct(v.availability_pct)} · {pct(v.canary_availability_pct)}", f"{ttft_azure} · {canary_ttft}",
            pct(v.canary_share_pct), "Azure metrics" if v.requests is not None else "none"]


def azure_lines(report: Report) -> list[str]:
    """The sentences under the table: where figures came from, disagreements, what could not be read."""
    if report.azure_view is None:
        return []
    out = [f"Azure figures: Azure Monitor platform metrics per deployment (ARM, Monitoring Reader); canary "
           f"figures: this report's source ({report.source}). Log Analytics AzureMetrics (per resource only) "
           "is the fallback under Real usage."]
    out += [f"{v.resource}/{v.deployment}: {v.disagreement}" for v in report.azure_view if v.disagreement]
    seen: set[str] = set()
    for v in report.azure_view:
        if v.note and v.note not in seen:
            seen.add(v.note)
            out.append(f"{v.resource}: {v.note}")
    return out


INVENTORY_HEADER = ["account", "region", "deployment", "model", "sku", "capacity", "rate limits", "state",
                    "retires in", "subscription quota used", "monitored"]


def inventory_row(r: InventoryRow) -> list[str]:
    """One deployment of the last inventory as table cells; what ARM did not say reads `no data`."""
    return [r.account, r.region, r.deployment, f"{r.model} {r.version}", r.sku,
            "no data" if r.capacity is None else str(r.capacity), r.rate_limits or "none listed", r.state,
            "no date" if r.days_to_retirement is None else f"{r.days_to_retirement} d ({r.retirement})",
            r.quota or "no data", "yes" if r.monitored else "no"]


def headroom_line(h: Headroom) -> str:
    """A deployment's peak real use against its own request limit, and the hint when it was throttled."""
    where = f"{h.resource}/{h.deployment}"
    limit = "no request limit listed" if h.limit_requests_per_min is None else \
        f"limit {h.limit_requests_per_min:g} requests/min"
    if h.peak_requests_per_min is None:
        used = f"no platform metrics (canaries throttled: {h.canary_throttled})"
    else:
        share = "" if h.peak_pct_of_limit is None else f" ({h.peak_pct_of_limit:g}% of the limit)"
        used = f"peak {h.peak_requests_per_min:g} requests/min{share}, {nodata(h.throttled, num)} × 429"
    return f"{where}: {limit}; {used}" + (f". {h.hint[:1].upper()}{h.hint[1:]}" if h.hint else "")


def control_plane_lines(cp: ControlPlane) -> list[str]:
    """The changes in the period, one line each (time first); "" entries are not used."""
    return [f"{c.at} {c.text}" for c in cp.changes]


def _change(d: DeploymentReport) -> str:
    c = d.change
    parts = [signed(c.availability_pct, lambda v: f"{v:.3f} pt"),
             signed(c.latency_p95_ms, lambda v: f"{v:.0f} ms p95")]
    return ", ".join(p for p in parts if p) or "-"


# --- text ------------------------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def partial_note(report: Report) -> str:
    """How every format says that a rolling report ends now ("" for one of whole days)."""
    if not report.partial:
        return ""
    today = report.overall.days[-1].date if report.overall.days else "today"
    return f"partial: ends now, {today} is today so far"


def text(report: Report) -> str:
    partial = f" · {partial_note(report)}" if report.partial else ""
    out = [report.title, f"{report.start} → {report.end} ({report.timezone}), source: {report.source}, "
           f"SLO target {report.slo_target_pct}%{partial}", "", _table(summary_rows(report)), ""]
    if report.overall.failures:
        out.append("Failures by kind (what to do, and the ids support asks for):")
        for f in report.overall.failures:
            out.append(f"  {f.kind} × {f.count}: {f.hint}")
            if f.request_id or f.apim_request_id:
                out.append(f"      e.g. request-id {f.request_id or '-'}  "
                           f"apim-request-id {f.apim_request_id or '-'}")
        out.append("")
    if report.incidents:
        shown = report.incidents[-TEXT_INCIDENTS:]
        more = len(report.incidents) - len(shown)
        latest = f", the latest {len(shown)} shown" if more else ""
        out.append(f"Incidents ({len(report.incidents)}{latest}):")
        for i in shown:
            out.append(f"  {i.resource}/{i.deployment} {i.state} from {i.started_at} to "
                       f"{i.ended_at or 'still open'} ({i.duration_s / 60:.0f} min, {i.kind or '-'})")
        out.append("")
    if report.azure_view is not None:
        out += ["Azure's view (all traffic per deployment) beside the canaries:"]
        out += [_table([AZURE_HEADER, *(azure_row(v) for v in report.azure_view)])] \
            if report.azure_view else ["  no deployments in Azure's metrics"]
        out += [f"  {line}" for line in azure_lines(report)] + [""]
    out += _control_plane_text(report.control_plane)
    out += _usage_lines(report) + [f"Note: {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def _control_plane_text(cp: ControlPlane | None) -> list[str]:
    if cp is None:
        return []
    out = [f"Control plane (Azure Resource Manager; from the {cp.source}):", "  Changes in the period "
           "(retirement warnings, drift, deployments added or removed):"]
    out += [f"    {line}" for line in control_plane_lines(cp)] or ["    none"]
    if cp.inventory is not None:
        out.append(f"  Inventory as ARM described it at {cp.inventory_at}:")
        table = _table([INVENTORY_HEADER, *map(inventory_row, cp.inventory)]) if cp.inventory else ""
        out += [f"    {line}" for line in table.split("\n")] if table else ["    no Claude deployments"]
    if cp.headroom:
        out.append("  Quota headroom (own request limit against real use):")
        out += [f"    {headroom_line(h)}" for h in cp.headroom]
    out += [f"  Note: {n}" for n in cp.notes]
    return [*out, ""]


def _usage_lines(report: Report) -> list[str]:
    if report.real_usage is None:
        return []
    lines = ["Real usage (all traffic, from the resources' platform metrics):"]
    for u in report.real_usage:
        if u.requests is None:
            lines.append(f"  {u.resource}: no platform metrics in the workspace for "
                         f"{u.azure_resource or '?'}")
            continue
        lines.append(f"  {u.resource}: {num(u.requests)} requests, {num(u.input_tokens)} input and "
                     f"{num(u.output_tokens)} output tokens, est. {usd(u.estimated_cost_usd)}; canaries "
                     f"{pct(u.canary_share_pct)} of requests")
    return [*lines, ""]


# --- markdown --------------------------------------------------------------------------------------------


def _md_table(rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    partial = f" · **{partial_note(report)}**" if report.partial else ""
    out = [f"# {report.title}", "", f"{report.start} → {report.end} ({report.timezone}) · source "
           f"`{report.source}` · SLO target {report.slo_target_pct}%{partial}", "", "## Deployments", "",
           _md_table(summary_rows(report)), ""]
    if report.overall.failures:
        rows = [["kind", "count", "what to do", "example request-id", "apim-request-id"]]
        rows += [[f.kind, str(f.count), f.hint, f.request_id or "", f.apim_request_id or ""]
                 for f in report.overall.failures]
        out += ["## Failures by kind", "", _md_table(rows), ""]
    if report.incidents:
        rows = [["deployment", "state", "from", "to", "minutes", "kind", "request-id"]]
        rows += [[f"{i.resource}/{i.deployment}", i.state, i.started_at, i.ended_at or "still open",
                  f"{i.duration_s / 60:.0f}", i.kind or "", i.request_id or ""] for i in report.incidents]
        out += ["## Incidents", "", _md_table(rows), ""]
    if report.azure_view is not None:
        out += ["## Azure's view", ""]
        if report.azure_view:
            out += [_md_table([AZURE_HEADER, *(azure_row(v) for v in report.azure_view)]), ""]
        out += [f"- {line}" for line in azure_lines(report)] + [""]
    cp = report.control_plane
    if cp is not None:
        out += ["## Control plane", "", f"From the {cp.source}.", "", "### Changes in the period", ""]
        out += [f"- {line}" for line in control_plane_lines(cp)] or ["- none"]
        out.append("")
        if cp.inventory is not None:
            out += [f"### Inventory (ARM, {cp.inventory_at})", ""]
            out += [_md_table([INVENTORY_HEADER, *map(inventory_row, cp.inventory)]), ""] if cp.inventory \
                else ["No Claude deployments.", ""]
        if cp.headroom:
            out += ["### Quota headroom", "", *[f"- {headroom_line(h)}" for h in cp.headroom], ""]
        out += [f"> {n}" for n in cp.notes] + ([""] if cp.notes else [])
    usage = _usage_lines(report)
    if usage:
        out += ["## Real usage", "", *[u.strip() and f"- {u.strip()}" for u in usage[1:]]]
    out += [f"> {n}" for n in report.notes]
    return "\n".join(out) + "\n"


# --- csv -------------------------------------------------------------------------------------------------


CSV_COLUMNS = ("date", "resource", "deployment", "canaries", "ok", "availability_pct", "latency_p50_ms",
               "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
               "input_tokens", "output_tokens", "cost_usd", "partial", "azure_requests", "azure_429",
               "azure_other_4xx", "azure_5xx", "azure_input_tokens", "azure_output_tokens")


def csv_text(report: Report) -> str:
    """One row per deployment and day, then one per day for all deployments (resource `*`); `partial` is
    true on today's rows of a report that ends now."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    groups = [(d.resource, d.deployment, d.days) for d in report.deployments]
    groups.append(("*", "*", report.overall.days))
    azure = {(v.resource, v.deployment, a.date): a for v in report.azure_view or () for a in v.days}
    for resource, deployment, days in groups:
        for day in days:
            a = azure.get((resource, deployment, day.date))
            real = ["", "", "", "", "", ""] if a is None else [
                _blank(x) for x in (a.requests, a.throttled, a.client_errors, a.server_errors, a.input_tokens,
                                    a.output_tokens)]
            w.writerow([day.date, resource, deployment, day.canaries, day.ok, _blank(day.availability_pct),
                        *(_blank(v) for v in (day.latency_ms.p50, day.latency_ms.p95, day.latency_ms.p99,
                                              day.ttft_ms.p50, day.ttft_ms.p95, day.ttft_ms.p99)),
                        day.input_tokens, day.output_tokens, day.cost_usd, str(day.partial).lower(), *real])
    return buf.getvalue()


def _blank(v: float | None) -> Any:
    return "" if v is None else v


# --- html ------------------------------------------------------------------------------------------------

_ENV = Environment(loader=PackageLoader("monitor.reports", "templates"), autoescape=select_autoescape(),
                   trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(pct=pct, ms=ms, usd=usd, num=num, p3=p3)


def report_charts(report: Report) -> dict[str, str]:
    labels = [f"{d.date[5:]} so far" if d.partial else d.date for d in report.overall.days]
    deps = report.deployments

    def per(metric: Callable[[Any], float | None]) -> list[charts.Series]:
        return [charts.Series(f"{d.resource}/{d.deployment}", [metric(day) for day in d.days]) for d in deps]

    return {
        "availability": charts.line_chart("Availability per day (%)", labels,
                                          per(lambda day: day.availability_pct), unit="%", ceiling=100.0),
        "latency": charts.line_chart("Latency p95 per day", labels, per(lambda day: day.latency_ms.p95),
                                     unit=" ms", floor=0.0),
        "ttft": charts.line_chart("Time to first token p95 per day", labels, per(lambda day: day.ttft_ms.p95),
                                  unit=" ms", floor=0.0),
        "tokens": charts.bar_chart("Canary tokens per day (input + output)", labels,
                                   [day.input_tokens + day.output_tokens for day in report.overall.days]),
        "cost": charts.bar_chart("Canary cost per day (USD)", labels,
                                 [day.cost_usd for day in report.overall.days], color=charts.PALETTE[2]),
    }


def html(report: Report) -> str:
    azure = [AZURE_HEADER, *(azure_row(v) for v in report.azure_view or ())]
    hours = [charts.sparkline(v.last_day_hours, floor=0.0, color=charts.PALETTE[1],
                              label=f"{v.resource}/{v.deployment} real requests per hour, last day")
             if v.last_day_hours else "" for v in report.azure_view or ()]
    cp = report.control_plane
    return _ENV.get_template("report.html.j2").render(
        r=report, charts=report_charts(report), rows=summary_rows(report), slo=slo,
        partial=partial_note(report), azure=azure, azure_lines=azure_lines(report), azure_hours=hours, cp=cp,
        cp_changes=control_plane_lines(cp) if cp else [],
        inventory=[INVENTORY_HEADER, *map(inventory_row, (cp.inventory or ()) if cp else ())],
        headroom=[headroom_line(h) for h in (cp.headroom if cp else ())])
