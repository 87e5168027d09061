"""A sharded fleet with the weekly email but no Log Analytics workspace: shard 0 would mail a report from
its own store, missing every other shard's deployments. `validate --shard` and `run --shard` refuse it,
naming the key and its line and saying what to configure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor import cli

CONFIG = """\
data_dir: {data_dir}
resources:
  - name: res
    base_url: http://127.0.0.1:9/anthropic/
    auth: {{api_key: sk-shard-DO-NOT-PRINT-31}}
    deployments: [{{name: a}}, {{name: b}}, {{name: c}}]
reports:
{workspace}  weekly:
    enabled: {enabled}
    recipients: [ops@example.com]
email:
  sender: monitor@example.com
  smtp: {{host: 127.0.0.1, port: 2525}}
"""
LINE = 9  # reports.weekly.enabled in CONFIG


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FOUNDRY_MONITOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def write(tmp: Path, *, enabled: bool = True, workspace: str | None = None) -> Path:
    path = tmp / "checks.yaml"
    path.write_text(CONFIG.format(data_dir=str(tmp / "data"), enabled=str(enabled).lower(),
                                  workspace=f"  workspace_id: {workspace}\n" if workspace else ""))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_with_a_shard_refuses_the_weekly_email_without_a_workspace(
        env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    code, out, err = run(["validate", "--config", str(path), "--shard", "0/3"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}:{LINE}: reports.weekly.enabled: the weekly report is enabled but "
                          "this daemon is shard 0/3")
    assert "reports.workspace_id (or FOUNDRY_MONITOR_WORKSPACE_ID)" in err
    assert "Traceback" not in err and "DO-NOT-PRINT" not in err


def test_validate_reads_the_shard_from_foundry_monitor_shard(
        env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("FOUNDRY_MONITOR_SHARD", "2/3")
    code, _, err = run(["validate", "--config", str(write(tmp_path))], capsys)
    assert code == 2 and "this daemon is shard 2/3" in err


@pytest.mark.parametrize(("case", "shard", "enabled", "workspace", "env_workspace"), [
    ("unsharded", None, True, None, None),
    ("one shard of one", "0/1", True, None, None),
    ("weekly email off", "0/3", False, None, None),
    ("workspace in the config", "0/3", True, "00000000-0000-0000-0000-00000000abcd", None),
    ("workspace from the environment", "0/3", True, None, "00000000-0000-0000-0000-00000000abcd"),
])
def test_validate_accepts_every_other_combination(
        env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
        shard: str | None, enabled: bool, workspace: str | None, env_workspace: str | None) -> None:
    if env_workspace:
        env.setenv("FOUNDRY_MONITOR_WORKSPACE_ID", env_workspace)
    path = write(tmp_path, enabled=enabled, workspace=workspace)
    code, out, err = run(["validate", "--config", str(path), *(["--shard", shard] if shard else [])], capsys)
    assert (code, err) == (0, ""), case
    assert out.startswith(f"{path}: ok, 3 deployment(s)")


def test_run_with_a_shard_refuses_the_same_way_before_it_starts(
        env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    code, _, err = run(["run", "--config", str(path), "--shard", "0/2", "--port", "0"], capsys)
    assert code == 2
    assert err.startswith(f"error: {path}:{LINE}: reports.weekly.enabled:") and "shard 0/2" in err
    assert not (tmp_path / "data").exists()  # no store opened, nothing probed


def test_run_reads_the_shard_from_foundry_monitor_shard_too(
        env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("FOUNDRY_MONITOR_SHARD", "1/2")
    code, _, err = run(["run", "--config", str(write(tmp_path)), "--port", "0"], capsys)
    assert code == 2 and "this daemon is shard 1/2" in err
