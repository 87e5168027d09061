"""`foundry-monitor demo`: the emulator and the daemon together, on embedded defaults, no Azure."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from monitor import demo


def test_a_short_demo_probes_every_situation_and_ends_with_a_summary(tmp_path: Path) -> None:
    out = io.StringIO()
    rc = demo.run(6.0, tmp_path, 0, Console(file=out, width=400, force_terminal=False), keep=True)
    text = out.getvalue()
    summary = text.split("summary of this run", 1)[1]
    assert rc == 0
    for name in ("healthy-haiku", "slow-sonnet", "throttled-opus", "flaky-opus", "retired-sonnet"):
        assert name in summary
    rows = {line.split("│")[2].strip() + "@" + line.split("│")[1].strip(): line
            for line in summary.splitlines() if line.count("│") > 6}
    assert "Keys and Endpoint" in rows["healthy-haiku@demo-rotated-key"]
    assert "deployment name" in rows["retired-sonnet@demo"]
    assert (tmp_path / "results.sqlite3").exists() and (tmp_path / "demo.log").stat().st_size > 0
    assert "key-that-was-rotated" not in text + (tmp_path / "demo.log").read_text()
