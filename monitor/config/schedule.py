"""When the weekly report is due: a cron-like schedule in an IANA time zone, DST-safe.

`mon 08:00` (a weekday and a local time) or a five-field crontab (`0 8 * * mon`). Occurrences are
computed by APScheduler's CronTrigger in the report's zone, so a DST change moves nothing: Monday 08:00
stays Monday 08:00 local time. The period a send covers is the seven whole local days before the
day of the occurrence.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_SIMPLE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)\s+([01]?\d|2[0-3]):([0-5]\d)$", re.I)


def trigger(schedule: str, timezone: str) -> CronTrigger:
    """The CronTrigger of a schedule; ValueError with a plain message when it cannot be read."""
    text = schedule.strip()
    m = _SIMPLE.match(text)
    try:
        if m:
            return CronTrigger(day_of_week=m.group(1).lower(), hour=int(m.group(2)), minute=int(m.group(3)),
                               timezone=ZoneInfo(timezone))
        return CronTrigger.from_crontab(text, timezone=ZoneInfo(timezone))
    except ValueError as exc:
        raise ValueError(f'cannot read schedule "{schedule}" ({exc}); write a weekday and a time like '
                         '"mon 08:00", or five crontab fields like "0 8 * * mon"') from None


def check(schedule: str) -> str:
    trigger(schedule, "UTC")
    return schedule


def last_occurrence(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The latest occurrence at or before `now` within the past 8 days (None if there is none)."""
    t = trigger(schedule, timezone)
    start = now - timedelta(days=8)
    found: datetime | None = None
    at = t.get_next_fire_time(None, start)
    while at is not None and at <= now:
        found = at
        at = t.get_next_fire_time(at, at + timedelta(seconds=1))
    return found
