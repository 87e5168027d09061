"""Times for people: "3 min ago" on the page, the exact UTC time on hover (never microseconds)."""

from __future__ import annotations

from datetime import UTC, datetime

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def parse(value: datetime | str | None) -> datetime | None:
    """A datetime from a datetime or an ISO 8601 string (as /status writes them); None stays None."""
    if value is None or value == "":
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """'45 s', '3 min', '2 h 5 min', '4 d 3 h': the largest unit and, below 10 of it, the next one."""
    s = max(0, int(seconds))
    for i, (size, unit) in enumerate(_UNITS):
        if s >= size or size == 1:
            whole, rest = divmod(s, size)
            text = f"{whole} {unit}"
            if whole < 10 and i + 1 < len(_UNITS) and size > 60:
                nsize, nunit = _UNITS[i + 1]
                if part := rest // nsize:
                    text += f" {part} {nunit}"
            return text
    raise AssertionError("unreachable")  # pragma: no cover


def ago(value: datetime | str | None, now: datetime) -> str:
    """'just now', '12 s ago', '3 min ago', '2 h 5 min ago'; '-' for no time; 'in 5 s' for the future."""
    at = parse(value)
    if at is None:
        return "-"
    delta = (now - at).total_seconds()
    if delta < -1:
        return f"in {duration(-delta)}"
    if delta < 1:
        return "just now"
    return f"{duration(delta)} ago"


def exact(value: datetime | str | None) -> str:
    """'2026-12-01 23:29:12 UTC' (whole seconds, always UTC); '' for no time."""
    at = parse(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""
