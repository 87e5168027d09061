"""`foundry-monitor demo`: the emulator and the daemon together, on embedded defaults, no Azure; its
output fits an 80-column terminal and turns plain when stdout is not one."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from monitor import demo
from monitor.canary.classify import HINTS
from monitor.canary.results import FailureKind

NAMES = ("healthy-haiku", "slow-sonnet", "throttled-opus", "flaky-opus", "retired-sonnet")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = set("│┃─━┏┓┗┛┡┩└┘┌┐╇╈╋")


def test_a_short_demo_probes_every_situation_and_ends_with_a_plain_summary_when_piped(tmp_path: Path) -> None:
    out = io.StringIO()  # not a terminal: no live view, a plain summary
    rc = demo.run(6.0, tmp_path, 0, Console(file=out, width=80, force_terminal=False), keep=True)
    text = out.getvalue()
    summary = text.split("summary of this run\n", 1)[1]
    assert rc == 0
    rows = {(line.split()[0], line.split()[1]): line for line in summary.split("what to do:")[0].splitlines()}
    for name in NAMES:
        assert ("demo", name) in rows
    assert ("demo-rotated-key", "healthy-haiku") in rows
    todo = summary.split("what to do:\n", 1)[1].split("while running", 1)[0].splitlines()
    assert todo and all(line.startswith("  demo") and "…" not in line for line in todo)  # whole, one line
    hints = {line.split(": ", 1)[0].strip(): line.split(": ", 1)[1] for line in todo}
    assert "Keys and Endpoint" in hints["demo-rotated-key/healthy-haiku"]
    assert "deployment name" in hints["demo/retired-sonnet"]
    assert not BOX & set(text) and not ANSI.search(text)  # no table drawing, no cursor movement
    assert "s left)" not in text  # no frames of the live view
    assert (tmp_path / "results.sqlite3").exists() and (tmp_path / "demo.log").stat().st_size > 0
    assert "key-that-was-rotated" not in text + (tmp_path / "demo.log").read_text()
    # kept: worth a look afterwards, and the command is on one line to copy
    assert f"  try: sqlite3 {tmp_path / 'results.sqlite3'} 'select" in text


def test_in_an_80_column_terminal_names_stay_whole_and_the_summary_says_what_to_do_in_full(
        tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    rc = demo.run(6.0, tmp_path, 0, console, keep=False)
    text = ANSI.sub("", out.getvalue())
    assert rc == 0
    assert max(len(line) for line in text.splitlines()) <= 80
    summary = text.split("summary of this run", 1)[1]
    table, todo = summary.split("what to do:", 1)
    for name in NAMES:
        assert re.search(rf"\bdemo +{name} ", table), name
    assert re.search(r"\bdemo-rotated-key +healthy-haiku ", table)
    # what to do, in full under the table: each name on its line, its hint indented and wrapped at 80
    todo = todo.split("while running", 1)[0]
    assert "\n  demo/retired-sonnet:\n    The deployment named" in todo and "…" not in todo
    assert "Keys and Endpoint" in " ".join(todo.split("demo-rotated-key/healthy-haiku:", 1)[1].split())
    assert "last kind" in text  # the live view was drawn too
    # a temporary data dir is deleted when the demo ends: no command on it is suggested
    assert str(tmp_path) not in text and "sqlite3" not in text
    assert "temporary directory, deleted now; pass --data-dir DIR" in " ".join(text.split())


def deployment(resource: str, name: str, state: str, kind: str, hint: FailureKind | None) -> dict[str, Any]:
    return {"resource": resource, "deployment": name, "state": state,
            "last_result": {"kind": kind, "latency_ms": 1234.0, "ttft_ms": 56.0},
            "last_failure": {"hint": HINTS[hint]} if hint else None}


K = FailureKind
FLEET = [deployment("demo", "healthy-haiku", "healthy", "ok", None),
         deployment("demo", "retired-sonnet", "down", "deployment_not_found", K.DEPLOYMENT_NOT_FOUND),
         deployment("demo-rotated-key", "healthy-haiku", "down", "invalid_api_key", K.INVALID_API_KEY),
         deployment("demo", "throttled-opus", "throttled", "rate_limited", K.RATE_LIMITED)]


def render(width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    console.print(demo.live_view(FLEET, 12, 9464))
    return out.getvalue()


def test_the_live_table_fits_80_columns_with_the_hints_under_it() -> None:
    text = render(80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert re.search(r"demo +retired-sonnet +down +deployment_not_found +1234ms", text)
    hints = lines[lines.index("hint of the last failure:") + 1:]
    assert [line.split(":")[0] for line in hints] == [
        "  demo/retired-sonnet", "  demo-rotated-key/healthy-haiku", "  demo/throttled-opus"]
    assert all(len(line) <= 80 and line.endswith("…") for line in hints)


def test_a_wide_terminal_shows_the_hints_in_the_table() -> None:
    text = render(160)
    assert "hint of the last failure:" not in text and "ttft" in text
    row = next(line for line in text.splitlines() if "retired-sonnet" in line)
    assert "56ms" in row and "The deployment named" in row and len(row) <= 160
