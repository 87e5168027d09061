"""`foundry-monitor inventory` and `check` with a discovery section, as a user runs them (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .arm_helpers import SUB_A, SUB_B, arm_emulator


def write_config(path: Path, emu: object, tmp: Path) -> None:
    d = {"subscriptions": [SUB_A, SUB_B], "arm_endpoint": emu.root,  # type: ignore[attr-defined]
         "ca_file": str(tmp / "ca.pem"), "endpoint": emu.plain.base_url}  # type: ignore[attr-defined]
    path.write_text(f"data_dir: {json.dumps(str(tmp / 'data'))}\ndiscovery: {json.dumps(d)}\n")


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ), check=False)


@pytest.mark.timeout(120)
def test_inventory_lists_every_claude_deployment_as_text_and_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "checks.yaml"
    with arm_emulator(tmp_path, monkeypatch) as emu:
        write_config(cfg, emu, tmp_path)
        text = run(["inventory", "--config", str(cfg)])
        as_json = run(["inventory", "--config", str(cfg), "--format", "json"])
        checked = run(["check", "--config", str(cfg), "--format", "json"])
        emu.arm_fault(403)
        refused = run(["inventory", "--config", str(cfg)])
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == "4 Claude deployment(s) in 2 subscription(s), 4 monitored"
    header = text.stdout.splitlines()[1].split()
    assert header[:4] == ["account", "region", "deployment", "model"]
    haiku_b = next(line for line in text.stdout.splitlines() if "haiku-b" in line)
    assert "claude-haiku-4-5 20251001" in haiku_b and "98/100" in haiku_b and "10 requests/min" in haiku_b
    rows = {r["deployment"]: r for r in json.loads(as_json.stdout)["deployments"]}
    assert set(rows) == {"haiku-a", "sonnet-a", "opus-lab", "haiku-b"}  # gpt-a is not Claude
    assert rows["opus-lab"]["region"] == "swedencentral" and rows["opus-lab"]["retirement"] is None
    assert rows["sonnet-a"]["retirement"] == "2026-12-20"
    assert checked.returncode == 0, checked.stderr
    assert {r["deployment"] for r in json.loads(checked.stdout)} == set(rows)
    assert refused.returncode == 1 and "Reader role" in refused.stderr and "Traceback" not in refused.stderr
