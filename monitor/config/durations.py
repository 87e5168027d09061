"""Durations as people write them in YAML and on the command line: 500ms, 30s, 5m, 1h, 1d."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``1m30s`` works too); ValueError with the expected form otherwise."""
    s = text.strip().lower() if isinstance(text, str) else ""
    if not s or not _WHOLE.fullmatch(s):
        raise ValueError(f'expected a duration like 30s or 5m, got "{text}"')
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(s))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 0.5 -> 500ms, 90 -> 90s, 300 -> 5m, 3600 -> 1h."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
