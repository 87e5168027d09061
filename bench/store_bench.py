"""Store and report benchmark: write throughput, and a 30-day report over a large history.

Fills a fresh store with `--deployments` deployments x one canary a minute x `--days` days (default
100 x 1/min x 30 days = 4.32 M results) through Store.save_results in batches of 500, the way the
daemon's writer does (each batch also updates the hourly rollups), then builds the 30-day report
from the local store and renders it. Prints figures; asserts nothing.

    .venv/bin/python bench/store_bench.py [--deployments 100] [--days 30] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor import config as config_mod
from monitor.reports.build import build_report
from monitor.reports.local import LocalSource
from monitor.reports.render import render
from monitor.store.sqlite import Store

KINDS = ["ok"] * 995 + ["overloaded", "rate_limited", "server_error", "timeout", "invalid_api_key"]


def rows(deployments: int, days: int, end: datetime, batch: int = 500):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    start = end - timedelta(days=days + 1)
    minutes = (days + 1) * 24 * 60
    out = []
    for m in range(minutes):
        at = (start + timedelta(minutes=m)).timestamp()
        for d in range(deployments):
            kind = rng.choice(KINDS)
            ok = kind == "ok"
            total = rng.lognormvariate(-0.4, 0.5) if ok else 0.05
            out.append((at + d * 0.01, f"res-{d % 10}", f"dep-{d:03d}", "claude-haiku-4-5", "bench", 0, kind,
                        200 if ok else 529, total, total, total * 0.4 if ok else None, 21 if ok else None,
                        3 if ok else None, 0, 0, 0.000036 if ok else None, f"req_{m}_{d}", f"apim-{m}-{d}",
                        "claude-haiku-4-5" if ok else None, "max_tokens" if ok else None,
                        None if ok else "bench failure", None))
            if len(out) == batch:
                yield out
                out = []
    if out:
        yield out


def config(deployments: int) -> config_mod.Config:
    lines = ["reports: {timezone: Europe/Berlin}", "defaults: {interval: 60s}", "resources:"]
    for r in range(10):
        deps = ", ".join(f"{{name: dep-{d:03d}, model: claude-haiku-4-5}}" for d in range(deployments)
                         if d % 10 == r)
        if deps:
            lines += [f"  - name: res-{r}", f"    resource: res-{r}", "    auth: {api_key: k}",
                      f"    deployments: [{deps}]"]
    return config_mod.loads("\n".join(lines) + "\n", "bench", env={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary directory)")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="store-bench-"))
    path = directory / "results.sqlite3"
    store = Store.open(path, timezone="Europe/Berlin")  # the zone of the report below
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    written, write_s = 0, 0.0
    for batch in rows(args.deployments, args.days, end):
        t = time.perf_counter()
        store.save_results(batch)
        write_s += time.perf_counter() - t
        written += len(batch)
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in directory.glob("results.sqlite3*"))
    print(f"wrote {written:,} results in {write_s:.1f} s of save_results: {written / write_s:,.0f} results/s "
          f"(batches of 500, rollups included)")
    print(f"store on disk: {size / 1e6:,.0f} MB ({size / written:.0f} bytes/result)")
    per_day = 1000 * 86400 / 60  # the fleet of #18: 1,000 deployments every 60 s
    keep = config_mod.Store().raw_retention / 86400
    print(f"1,000 deployments at 60 s ({per_day / 1e6:.2f} M results a day) keep "
          f"{size / written * per_day * keep / 1e9:.1f} GB of raw results at the default raw_retention "
          f"({keep:g} days; target <= 5 GB); rollups add little (hourly rows)")
    cfg = config(args.deployments)
    timings = []
    for _ in range(3):
        t = time.perf_counter()
        report = build_report(LocalSource(store), cfg, datetime.now(UTC), days=args.days)
        timings.append(time.perf_counter() - t)
    t = time.perf_counter()
    html = render(report, "html")
    render_s = time.perf_counter() - t
    print(f"{args.days}-day report over {args.deployments} deployments ({report.overall.canaries:,} canaries "
          f"in the period, plus the previous period): best {min(timings):.2f} s, worst {max(timings):.2f} s; "
          f"html render {render_s:.2f} s ({len(html) / 1e3:,.0f} kB)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    store.close()


if __name__ == "__main__":
    main()
