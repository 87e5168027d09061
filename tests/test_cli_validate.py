"""`foundry-monitor validate`: a table on success (never a secret); on error one stderr message, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import cli

ROOT = Path(__file__).resolve().parent.parent
CHECKS_YAML = ROOT / "checks.yaml"
DATA = Path(__file__).resolve().parent / "data" / "config"
FIXTURES = sorted(DATA.glob("invalid-*.yaml"))

FAKE_KEY = "sk-fake-DO-NOT-PRINT-1234"
ENDPOINT = "https://my-foundry.services.ai.azure.com/anthropic/v1/messages"
DEPLOYMENTS = ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The CLI reads os.environ: start every test without any variable the config could read."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "FOUNDRY_MONITOR_", "SOME_UNSET_VAR")):
            monkeypatch.delenv(name)
    return monkeypatch


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> list[list[str]]:
    """The rows of the validate table, split on runs of two or more spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("RESOURCE"))
    return [[c for c in line.split("  ") if c.strip()] for line in lines[start:]]


def test_validate_prints_one_row_per_deployment_with_endpoint_auth_and_timings(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ANTHROPIC_FOUNDRY_RESOURCE", "my-foundry")
    env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    code, out, err = run(["validate", "--config", str(CHECKS_YAML)], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"{CHECKS_YAML}: ok, 4 deployment(s) in 1 resource(s)\n")
    rows = [[c.strip() for c in row] for row in table(out)]
    assert rows[0] == ["RESOURCE", "DEPLOYMENT", "MODEL", "ENDPOINT", "AUTH", "INTERVAL", "TIMEOUT"]
    assert rows[1:] == [["default", d, d, ENDPOINT, "api key (x-api-key)", "1m", "30s"] for d in DEPLOYMENTS]


def test_validate_with_base_url_shows_that_url(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ANTHROPIC_FOUNDRY_BASE_URL", "https://gw.example.com/anthropic")
    env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    code, out, _ = run(["validate", "--config", str(CHECKS_YAML)], capsys)
    assert code == 0
    assert all(row[3].strip() == "https://gw.example.com/anthropic/v1/messages" for row in table(out)[1:])


def test_validate_shows_entra_and_per_deployment_overrides(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "entra.yaml"
    path.write_text(
        "resources:\n"
        "  - name: prod\n"
        "    resource: my-foundry\n"
        "    auth:\n"
        "      entra:\n"
        "        client_id: 00000000-0000-0000-0000-000000000000\n"
        "    deployments:\n"
        "      - name: opus\n"
        "        model: claude-opus-4-5\n"
        "        interval: 5m\n"
        "        timeout: 500ms\n",
        encoding="utf-8",
    )
    code, out, _ = run(["validate", "--config", str(path)], capsys)
    assert code == 0
    assert [c.strip() for c in table(out)[1]] == [
        "prod", "opus", "claude-opus-4-5", ENDPOINT, "entra (managed identity)", "5m", "500ms",
    ]


@pytest.mark.parametrize("source", ["env", "file", "literal"])
def test_validate_never_prints_the_api_key(
    source: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = CHECKS_YAML
    env.setenv("ANTHROPIC_FOUNDRY_RESOURCE", "my-foundry")
    if source == "env":
        env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    elif source == "file":
        (tmp_path / "key").write_text(FAKE_KEY + "\n", encoding="utf-8")
        env.setenv("ANTHROPIC_FOUNDRY_API_KEY_FILE", str(tmp_path / "key"))
    else:
        config = tmp_path / "literal.yaml"
        text = CHECKS_YAML.read_text(encoding="utf-8").replace("${ANTHROPIC_FOUNDRY_API_KEY}", FAKE_KEY)
        config.write_text(text, encoding="utf-8")
    code, out, err = run(["validate", "--config", str(config)], capsys)
    assert code == 0
    assert "claude-opus-4-5" in out
    assert FAKE_KEY not in out + err
    assert FAKE_KEY[:12] not in out + err


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem.removeprefix("invalid-") for p in FIXTURES])
def test_validate_of_an_invalid_config_prints_its_message_to_stderr_and_exits_2(
    path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    expected = path.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    code, out, err = run(["validate", "--config", str(path)], capsys)
    assert (code, out) == (2, "")
    assert err == f"error: {path}{expected.removeprefix(path.name)}\n"
    assert "Traceback" not in err
    assert FAKE_KEY not in err


def test_validate_with_the_variables_unset_exits_2_naming_the_api_key_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["validate", "--config", str(CHECKS_YAML)], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {CHECKS_YAML}:")
    assert "resources[0].auth.api_key: environment variable ANTHROPIC_FOUNDRY_API_KEY is not set" in err


def test_validate_of_a_missing_file_exits_2_and_says_how_to_point_at_one(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.yaml"
    code, _, err = run(["validate", "--config", str(missing)], capsys)
    assert code == 2
    assert err == f"error: {missing}: no such file (pass --config PATH or set FOUNDRY_MONITOR_CONFIG)\n"


def test_validate_reads_foundry_monitor_config_when_no_config_option_is_given(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("FOUNDRY_MONITOR_CONFIG", str(CHECKS_YAML))
    env.setenv("ANTHROPIC_FOUNDRY_RESOURCE", "my-foundry")
    env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    code, out, _ = run(["validate"], capsys)
    assert code == 0
    assert out.startswith(f"{CHECKS_YAML}: ok")


def validate_edited(old: str, new: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                    tmp_path: Path) -> tuple[Path, int, str, str]:
    """`validate` of the shipped checks.yaml with one edit, the key in the environment."""
    bad = tmp_path / "checks.yaml"
    bad.write_text(CHECKS_YAML.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    env.setenv("ANTHROPIC_FOUNDRY_RESOURCE", "my-foundry")
    env.setenv("ANTHROPIC_FOUNDRY_API_KEY", FAKE_KEY)
    return (bad, *run(["validate", "--config", str(bad)], capsys))


def test_validate_of_a_misindented_config_does_not_leak_the_key(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, code, _, err = validate_edited("  - name: default", "    name: default", env, capsys, tmp_path)
    assert code == 2
    assert "resources: expected a list (lines starting with -), got a mapping" in err
    assert FAKE_KEY not in err


@pytest.mark.parametrize("auth", [f"auth:\n      api_key {FAKE_KEY}", f"auth: api_key={FAKE_KEY}"],
                         ids=["missing-colon", "key-value-on-one-line"])
def test_validate_of_a_malformed_auth_block_names_the_mistake_without_the_literal_key(
    auth: str, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "checks.yaml"
    bad.write_text("resources:\n  - name: main\n    resource: my-foundry\n    " + auth + "\n"
                   "    deployments:\n      - name: claude-haiku-4-5\n", encoding="utf-8")
    code, out, err = run(["validate", "--config", str(bad)], capsys)
    assert (code, out) == (2, "")
    assert err == f"error: {bad}:4: resources[0].auth: expected a mapping of keys, got a string\n"


def test_validate_of_an_interval_too_long_to_schedule_exits_2_with_the_limit(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad, code, out, err = validate_edited("interval: 60s", "interval: 99999999999d", env, capsys, tmp_path)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {bad}:") and err.endswith(": defaults.interval: must be at most 3650d\n")
    assert "Traceback" not in err


# --- as a user runs it: a separate process with an explicit environment -------------------------------


def python_m_monitor_validate(config: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "monitor", "validate", "--config", str(config)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def test_python_m_monitor_validate_with_the_two_variables_exits_0_without_the_key() -> None:
    proc = python_m_monitor_validate(
        CHECKS_YAML, {"ANTHROPIC_FOUNDRY_RESOURCE": "my-foundry", "ANTHROPIC_FOUNDRY_API_KEY": FAKE_KEY}
    )
    assert proc.returncode == 0, proc.stderr
    assert ENDPOINT in proc.stdout
    assert FAKE_KEY not in proc.stdout + proc.stderr


def test_python_m_monitor_validate_without_the_variables_exits_2_without_a_traceback() -> None:
    proc = python_m_monitor_validate(CHECKS_YAML, {})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "ANTHROPIC_FOUNDRY_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
