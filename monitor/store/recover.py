"""A damaged store must not stop the monitor: its file (with -wal and -shm) is moved aside, kept with a
timestamp in its name for whoever wants to look at it, and a fresh store is started in its place.

Only the daemon does this (``open_or_recover``): `report` and other readers get the StoreDamaged error,
they have nothing to keep running.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from monitor.errors import StoreDamaged, StoreError

from .sqlite import Store

SIDE_FILES = ("", "-wal", "-shm")  # the database and SQLite's two companions, moved together


@dataclass(frozen=True, slots=True)
class Recovery:
    """A damaged store was moved aside: where it went, and why it could not be opened."""

    damaged: str  # the moved database file (its -wal/-shm, if any, sit next to it with the same name)
    error: str

    def fields(self) -> dict[str, str]:
        return {"event": "store_recovered", "moved_to": self.damaged, "error": self.error}


def aside_name(path: Path, at: datetime) -> Path:
    """`results.sqlite3` -> `results.damaged-20261201T231500Z.sqlite3` (a number added if it is taken)."""
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        tag = stamp if n == 0 else f"{stamp}-{n}"
        candidate = path.with_name(f"{path.stem}.damaged-{tag}{path.suffix}")
        if not any(Path(f"{candidate}{s}").exists() for s in SIDE_FILES):
            return candidate
    raise StoreError(f"cannot move the damaged store {path} aside: too many damaged copies next to it")


def move_aside(path: Path, at: datetime) -> Path:
    """Rename the store and its -wal/-shm to the damaged name (the same directory: a rename, not a copy)."""
    target = aside_name(path, at)
    for suffix in SIDE_FILES:
        src = Path(f"{path}{suffix}")
        try:
            os.replace(src, f"{target}{suffix}")
        except FileNotFoundError:
            continue  # no -wal/-shm (or another process moved it first)
        except OSError as exc:
            raise StoreError(f"the store at {path} is damaged and cannot be moved aside ({exc.strerror}); "
                             f"move or delete {src} by hand") from None
    return target


def _hold(path: Path) -> dict[str, Path]:
    """Hard links to the -wal and -shm: SQLite deletes them when it closes a store it failed to open, and
    the WAL may hold the last commits. (Where links are not supported they are simply not kept.)"""
    held: dict[str, Path] = {}
    for suffix in SIDE_FILES[1:]:
        link = path.with_name(f".{path.name}{suffix}.held-{os.getpid()}")
        with contextlib.suppress(OSError):
            link.unlink(missing_ok=True)
            os.link(f"{path}{suffix}", link)
            held[suffix] = link
    return held


def open_or_recover(path: str | Path, at: datetime, timezone: str = "UTC") -> tuple[Store, Recovery | None]:
    """Open the store; when its file is damaged, move it aside (`at` names it) and open a fresh one."""
    p = Path(path)
    held = _hold(p)
    try:
        try:
            return Store.open(p, timezone=timezone), None
        except StoreDamaged as exc:
            error = str(exc)
        moved = move_aside(p, at)
        for suffix, link in held.items():
            target = Path(f"{moved}{suffix}")
            if not target.exists():  # SQLite deleted it: the link still has its content
                with contextlib.suppress(OSError):
                    os.replace(link, target)
        return Store.open(p, timezone=timezone), Recovery(str(moved), error)
    finally:
        for link in held.values():
            with contextlib.suppress(OSError):
                link.unlink(missing_ok=True)
