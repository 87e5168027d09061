"""Configs: a generated flood of documents either loads or is one ConfigError that never shows the API
key; and a reload of any kind of broken file keeps the old config running.

The strategies extend tests/test_config.py's (imported, not copied): its random documents with scalars
that reference the key's variable, its line mutations of the shipped checks.yaml, and near-valid
configs with a few structural edits (where the cross-key rules run). The key is generated per example
and reaches the loader from the environment, as ``${ANTHROPIC_FOUNDRY_API_KEY}`` or through
``ANTHROPIC_FOUNDRY_API_KEY_FILE``.
"""

from __future__ import annotations

import copy
import os
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import config
from monitor.daemon.service import Daemon
from monitor.emulator.runner import EmulatorServer
from monitor.errors import ConfigError
from tests.daemon_helpers import config_text, make_daemon, started, until
from tests.test_config import CONFIG_WORDS, documents, keys, mutated_checks_yaml, scalars
from tests.test_daemon import scenario

KEY_VAR = "ANTHROPIC_FOUNDRY_API_KEY"
REF = "${" + KEY_VAR + "}"

# A distinctive prefix: no error text can contain the whole key by coincidence (a bare run of zeros could).
api_keys = st.text(alphabet=string.ascii_letters + string.digits + "-_.+/=~", min_size=16,
                   max_size=40).map(lambda s: "SeCrEt-" + s)
key_refs = st.sampled_from([REF, f"x{REF}", f"{REF}/anthropic/", f"https://{REF}/", f"${{{KEY_VAR}:-d}}",
                            f"{REF} {REF}", f"'{REF}'"])
key_scalars = st.one_of(scalars, key_refs)
key_documents = st.recursive(
    key_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def near_valid_base() -> dict[str, Any]:
    return {
        "data_dir": "./data",
        "defaults": {"interval": "60s", "timeout": "30s", "stream": True, "confirm": 1, "latency_slo": "10s"},
        "resources": [
            {"name": "main", "resource": "my-foundry", "auth": {"api_key": REF},
             "deployments": [{"name": "claude-haiku-4-5"}, {"name": "opus", "model": "claude-opus-4-5"}]},
            {"name": "second", "base_url": "https://gw.example.com/anthropic/", "api_key_header": "api-key",
             "auth": {"api_key": REF}, "budget": {"monthly_usd": 5},
             "deployments": [{"name": "claude-sonnet-4-5", "interval": "5m"}]},
        ],
        "server": {"host": "127.0.0.1", "port": 9464, "bearer_token": "${FM_TOKEN:-}"},
        "store": {"raw_retention": "35d"},
        "reports": {"timezone": "UTC", "weekly": {"enabled": False, "schedule": "mon 08:00"}},
        "telemetry": {"service_name": "foundry-monitor"},
    }


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """The base config with 0-4 edits: a value replaced (often by a key reference), a key dropped or added,
    a list entry duplicated. Most results reach validation and the cross-key rules."""
    doc = near_valid_base()
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        op = draw(st.sampled_from(["value", "key_ref", "delete", "add", "duplicate"]))
        if op == "value":
            parent[last] = draw(key_documents)
        elif op == "key_ref":
            parent[last] = draw(key_refs)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(CONFIG_WORDS) | st.text(max_size=8))] = draw(key_documents)
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


generated = st.one_of(
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),       # tests/test_config.py's own
    key_documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),   # ... with key references
    mutated_checks_yaml(),                                                # the shipped file, mutated
    near_valid(),                                                         # almost right, edited
)


def pieces(key: str, size: int = 12) -> list[str]:
    """Every run of ``size`` characters of the key: a message quoting part of it (a field of a schedule, a
    token split at a hyphen) leaks too."""
    return [key[i:i + size] for i in range(len(key) - size + 1)]


def shows_the_key(message: str, key: str, text: str) -> bool:
    """Whether ``message`` holds the key or a piece of it that the file does not hold itself (a message
    may quote the file, whose generated text can share a run of characters with the key, like 0000...)."""
    return key in message or any(p in message and p not in text for p in pieces(key))


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


LOADED: dict[str, int] = {"config": 0, "error": 0}


@pytest.mark.timeout(120)
@settings(max_examples=2500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much, HealthCheck.large_base_example])
@given(text=generated, key=api_keys, via_file=st.booleans(), resource_var=st.booleans())
def test_generated_configs_load_or_raise_one_config_error_that_never_shows_the_key(
        text: str, key: str, via_file: bool, resource_var: bool, key_dir: Path) -> None:
    env = {"X": "1", "FM_TOKEN": ""}
    if via_file:
        secret = key_dir / "api-key"
        secret.write_text(key + "\n", encoding="utf-8")
        env[f"{KEY_VAR}_FILE"] = str(secret)
    else:
        env[KEY_VAR] = key
    if resource_var:
        env["ANTHROPIC_FOUNDRY_RESOURCE"] = "my-foundry"
    try:
        cfg = config.loads(text, "checks.yaml", env)
    except ConfigError as exc:
        LOADED["error"] += 1
        assert exc.problems and all(p.file == "checks.yaml" and p.message for p in exc.problems)
        assert str(exc).startswith("checks.yaml")
        leaking = [str(p) for p in exc.problems if shows_the_key(str(p), key, text)]
        assert not leaking
    else:
        LOADED["config"] += 1
        assert isinstance(cfg, config.Config)
        for res in cfg.resources:  # a key may sit in a plain field if written there; auth keeps it secret
            if res.auth is not None and res.auth.api_key is not None:
                assert key not in repr(res.auth) and key not in str(res.auth.model_dump())


def test_the_generated_configs_covered_both_outcomes() -> None:
    """Runs after the fuzz (file order): a generator that only ever made errors would prove little."""
    print(f"\nconfig fuzz: {LOADED}")
    if sum(LOADED.values()) == 0:
        pytest.skip("the fuzz did not run in this session")
    assert LOADED["config"] >= 100 and LOADED["error"] >= 1000


# --- the secrets the loader once printed ----------------------------------------------------------------

MINIMAL = """\
resources:
  - name: main
    resource: my-foundry
    auth:
      api_key: {key}
    deployments:
      - name: claude-haiku-4-5
"""
KEY = "SeCrEt_0123456789abcdef_DO-NOT-PRINT"  # an underscore: not a valid resource name


BASE = MINIMAL.format(key=REF)


@pytest.mark.parametrize(("text", "expected"), [
    (BASE.replace("resource: my-foundry", f"resource: {REF}"),
     f'resources[0].resource: expected an Azure resource name like my-foundry (letters, digits, hyphens), '
     f'got "{REF}"'),
    (BASE.replace("resource: my-foundry", f"base_url: {REF}"),
     "resources[0].base_url: expected a URL like https://NAME.services.ai.azure.com/anthropic/, "
     f'got "{REF}"'),
    (BASE.replace("name: main", f"name: {REF}") + BASE.replace("name: main", f"name: {REF}").removeprefix(
        "resources:\n"),
     f'resources[1].name: duplicate resource name "{REF}" (also resources[0])'),
    (BASE.replace("- name: claude-haiku-4-5", f"- name: {REF}\n      - name: {REF}"),
     f'resources[0].deployments[1].name: duplicate deployment name "{REF}" in resource "main"'),
    (BASE + f"reports:\n  weekly:\n    schedule: 0 8 * * {REF}\n",  # APScheduler quotes the bad field
     f'reports.weekly.schedule: cannot read schedule "0 8 * * {REF}"; write a weekday and a time'),
    (BASE + f"reports:\n  weekly:\n    schedule: {REF}-1 8 * * mon\n",
     f'reports.weekly.schedule: cannot read schedule "{REF}-1 8 * * mon"; write a weekday'),
    (BASE + f"reports:\n  timezone: Europe/{REF}\n", f'reports.timezone: unknown time zone "Europe/{REF}"'),
    (BASE + f"telemetry: connection_string={REF}\n",
     f'telemetry: expected a mapping of keys, got "connection_string={REF}"'),
    (BASE + f"server:\n  bearer_token:\n    - {REF}\n", "server.bearer_token: expected a string"),
], ids=["resource", "base_url", "duplicate-resource-name", "duplicate-deployment-name", "schedule-weekday",
        "schedule-minute-range", "timezone", "telemetry-on-one-line", "bearer-token-list"])
def test_a_key_variable_used_in_the_wrong_place_is_not_printed(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, "checks.yaml", {KEY_VAR: KEY})
    assert expected in str(info.value)  # the reference as written, or no value at all
    assert not shows_the_key(str(info.value), KEY, text)


@pytest.mark.parametrize("value", [f"\n    - {REF}", f"\n    every: {REF}"], ids=["list", "mapping"])
def test_a_key_variable_inside_a_list_given_as_a_duration_is_not_printed(value: str) -> None:
    text = f"defaults:\n  interval: {value}\n" + MINIMAL.format(key=REF)
    with pytest.raises(ConfigError) as info:
        config.loads(text, "checks.yaml", {KEY_VAR: KEY})
    assert "defaults.interval: expected a duration like 30s or 5m, got a " in str(info.value)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("auth", [f"auth:\n      api_key {KEY}", f"auth: {KEY}", f"auth: api_key={KEY}"],
                         ids=["missing-colon", "key-as-auth", "key-value-on-one-line"])
def test_a_literal_key_in_a_malformed_auth_block_is_not_printed(auth: str) -> None:
    text = MINIMAL.format(key=KEY).replace(f"auth:\n      api_key: {KEY}", auth)
    with pytest.raises(ConfigError) as info:
        config.loads(text, "checks.yaml", {})
    assert "resources[0].auth: expected a mapping of keys, got a string" in str(info.value)
    assert not any(piece in str(info.value) for piece in pieces(KEY))  # the key is in the file: no piece


# --- reloads of broken files ---------------------------------------------------------------------------

NAMES = ["steady-a", "steady-b"]


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Daemon, EmulatorServer, str]]:
    with EmulatorServer(scenario=scenario([*NAMES, "added"])) as emu:
        text = config_text(emu.base_url, emu.api_key, NAMES, tmp_path / "data",
                           defaults={"interval": "250ms", "timeout": "200ms"})
        daemon = make_daemon(tmp_path, text)
        async with started(daemon):
            yield daemon, emu, text


def probes(emu: EmulatorServer) -> dict[str, int]:
    return {n: sum(1 for e in emu.log() if e["deployment"] == n) for n in [*NAMES, "added"]}


def _remove(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _unreadable(path: Path) -> None:
    path.chmod(0)


def _latin1(path: Path) -> None:
    path.write_bytes(path.read_text().replace("steady-a", "st\xe4ady-a").encode("latin-1"))


BROKEN: dict[str, tuple[Any, str]] = {
    # name: (how to break checks.yaml: new text or a function of its path, a part of the error)
    "yaml-syntax-error": (lambda t: t.replace("defaults: {", "defaults: {{", 1), "invalid YAML"),
    "unknown-key": (lambda t: t.replace('"interval"', '"intreval"'), "intreval: unknown key"),
    "wrong-type": (lambda t: t.replace('"failure_threshold": 2', '"failure_threshold": "two"'),
                   'failure_threshold: expected a whole number, got "two"'),
    "missing-resources": (lambda t: t[:t.index("resources:")], "resources: required key is missing"),
    "interval-shorter-than-timeout": (lambda t: t.replace('"interval": "250ms"', '"interval": "100ms"'),
                                      "shorter than the timeout"),
    "unset-variable": (lambda t: t.replace('"emu-test-key"', '"${FM_RELIABILITY_UNSET}"'),
                       "FM_RELIABILITY_UNSET is not set"),
    "empty-file": (lambda t: "", "the file is empty"),
    "comments-only": (lambda t: "# nothing here\n", "the file is empty"),
    "not-utf8": (_latin1, "cannot read: not UTF-8 text"),
    "file-deleted": (_remove, "no such file"),
    "file-is-a-directory": (_directory, "cannot read: Is a directory"),
    "unreadable": (_unreadable, "cannot read: Permission denied"),
}


def with_added(good: str) -> str:
    """The good config plus a third deployment."""
    added = "claude-haiku-4-5}\n      - {name: added, model: claude-haiku-4-5}"
    return good.replace("claude-haiku-4-5}", added, 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(BROKEN))
async def test_a_reload_of_a_broken_file_keeps_the_old_config_running(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root from reading")
    monkeypatch.delenv("FM_RELIABILITY_UNSET", raising=False)
    breaker, error = BROKEN[kind]
    path = tmp_path / "checks.yaml"
    async with running(tmp_path) as (daemon, emu, good):
        old_cfg, old_fleet = daemon.cfg, daemon.fleet
        if breaker in (_remove, _directory, _unreadable, _latin1):
            breaker(path)
        else:
            path.write_text(breaker(good))
        assert await daemon.reload() is False
        before = probes(emu)
        await until(lambda: all(probes(emu)[n] >= before[n] + 2 for n in NAMES), timeout=10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}") as client:
            status = (await client.get("/status")).json()
            healthz = await client.get("/healthz")
    assert daemon.cfg is old_cfg and daemon.fleet is old_fleet
    assert healthz.status_code == 200
    reloads = status["reloads"]
    assert (reloads["ok"], reloads["failed"], reloads["last_ok"]) == (0, 1, False)
    assert reloads["last_error"].startswith(str(path)) and error in reloads["last_error"], reloads
    assert {d["deployment"] for d in status["deployments"]} == set(NAMES)
    assert all(d["state"] == "healthy" for d in status["deployments"])


@pytest.mark.timeout(60)
async def test_after_a_failed_reload_the_fixed_file_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    async with running(tmp_path) as (daemon, emu, good):
        old_fleet = daemon.fleet
        path.write_text(good.replace('"interval"', '"intreval"'))
        assert await daemon.reload() is False
        path.write_text(with_added(good))
        assert await daemon.reload() is True
        await until(lambda: probes(emu)["added"] >= 2, timeout=10)
        status = daemon.status()
        # the replaced transports close after their grace (the longest timeout + 1 s)
        await until(lambda: old_fleet.closed, timeout=10)
    assert status["reloads"] == {"ok": 1, "failed": 1, "last_ok": True, "last_error": None}
    assert {d["deployment"] for d in status["deployments"]} == {*NAMES, "added"}


@pytest.mark.timeout(60)
async def test_a_stop_right_after_a_reload_closes_the_replaced_clients(tmp_path: Path) -> None:
    async with running(tmp_path) as (daemon, _, good):
        old_fleet = daemon.fleet
        (tmp_path / "checks.yaml").write_text(with_added(good))
        assert await daemon.reload() is True
    assert old_fleet.closed  # by the shutdown, before the grace after the reload ran out


@pytest.mark.timeout(60)
async def test_a_reload_with_an_interval_too_long_to_schedule_keeps_the_old_config_running(
        tmp_path: Path) -> None:
    """Such an interval once passed validation: reload() swapped in the new fleet, then scheduler.replace()
    raised OverflowError from IntervalTrigger (timedelta) with the old jobs removed, so the daemon probed
    nothing (through SIGHUP it exited with a traceback). Validation now refuses it like any other mistake."""
    async with running(tmp_path) as (daemon, emu, good):
        old_cfg, old_fleet = daemon.cfg, daemon.fleet
        too_long = good.replace('"interval": "250ms"', '"interval": "99999999999d"')  # 2.7e8 years
        (tmp_path / "checks.yaml").write_text(too_long)
        assert await daemon.reload() is False
        before = probes(emu)
        await until(lambda: all(probes(emu)[n] >= before[n] + 2 for n in NAMES), timeout=5)
        status = daemon.status()
    assert daemon.cfg is old_cfg and daemon.fleet is old_fleet
    assert "defaults.interval: must be at most 3650d" in status["reloads"]["last_error"]
