"""No secret in any byte the monitor produces: an API key (and a rotated-out one), the SMTP password (and a
wrong one), the `/status` bearer token, the managed-identity header and every Entra token the emulator
issued. One full cycle with faults: `validate`, `check` (json and text), the daemon at `--log-level debug`
with `--telemetry-debug` (stdout and stderr), every Application Insights envelope, every HTTP endpoint,
`report` in every format, the weekly email and `report --email` (raw messages and decoded parts), a
failed `report --email`, an internal-error traceback, and the store and everything else in data_dir."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.emulator.runner import EmulatorServer
from monitor.store.sqlite import Store
from tests.capture import capture_server
from tests.certs import make_certs
from tests.daemon_helpers import monitor_process
from tests.loopback import free_port
from tests.test_daemon_process import ready, wait_for
from tests.test_telemetry_process import IDENTITY_VARS
from tests.test_weekly import PASSWORD, USER, smtp_server

API_KEY = "sk-secret-api-key-7d1c0ffee"
ROTATED_KEY = "sk-secret-rotated-key-5e11ab1e"  # the resource no longer accepts it: 401 on every canary
BEARER = "tok-secret-status-bearer-3f1a9c"
IDENTITY_HEADER = "secret-identity-header-b00b1e5"
WRONG_PASSWORD = "smtp-wrong-pass-c0ffee-secret"
TOKEN_PREFIX = "emu-entra-"  # every token the emulator's identity endpoint issues starts with it

FAULTS: dict[str, list[dict[str, Any]]] = {
    "healthy": [],
    "bad-key": [{"kind": "bad_key"}],
    "denied": [{"kind": "permission_denied"}],
    "backend-auth": [{"kind": "backend_auth"}],
    "overloaded": [{"kind": "overloaded", "rate": 0.5}],
    "stream-error": [{"kind": "stream_error"}],
    "malformed": [{"kind": "malformed_json"}],
    "truncated": [{"kind": "truncated_stream"}],
    "reset": [{"kind": "reset"}],
    "redirect": [{"kind": "redirect"}],
    "hang": [{"kind": "hang"}],
    "huge": [{"kind": "huge_body"}],
    "throttled": [{"kind": "rate_limit", "retry_after": 1}],
    "entra-ok": [],
    "entra-expired": [{"kind": "expired_token"}],
    "rotated": [],
}
API_KEY_DEPLOYMENTS = [n for n in FAULTS if not n.startswith(("entra-", "rotated"))] + ["retired"]
EXPECTED_KINDS = {"ok", "invalid_api_key", "permission_denied", "server_error", "overloaded",
                  "malformed_response", "connection_error", "timeout", "unexpected_status",
                  "rate_limited", "token_rejected", "deployment_not_found"}


def emulator_scenario() -> dict[str, Any]:
    return {"api_key": API_KEY, "seed": 7, "identity": {"header": IDENTITY_HEADER},
            "deployments": [{"name": n, "model": "claude-haiku-4-5-20251001", "latency": {"base": "5ms"},
                             "faults": f} for n, f in FAULTS.items()]}


def config_text(emu: EmulatorServer, data: Path, ingestion: str, smtp_port: int, ca: str,
                password: str = "${SMTP_PASSWORD}", interval: str = "1s") -> str:  # noqa: S107 - a reference
    last = datetime.now(UTC) - timedelta(minutes=3)  # a daily send that is due now (within the grace)
    deps = ", ".join(f"{{name: {n}, model: claude-haiku-4-5}}" for n in API_KEY_DEPLOYMENTS)
    return (
        f"data_dir: {json.dumps(str(data))}\n"
        "log_level: debug\n"
        f"defaults: {{interval: '{interval}', timeout: 800ms, confirm: 1, confirm_interval: 100ms, "
        "failure_threshold: 2, success_threshold: 1}\n"
        f"telemetry: {{connection_string: {json.dumps(ingestion)}, export_interval: 1s}}\n"
        f"server: {{port: 0, bearer_token: {BEARER}}}\n"
        "reports:\n  timezone: UTC\n"
        f"  weekly: {{enabled: true, schedule: '{last.minute} {last.hour} * * *', "
        "recipients: [team@example.com]}\n"
        f"email:\n  sender: {USER}\n"
        f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: starttls, username: {USER}, "
        f"password: '{password}', ca_file: {ca}, timeout: 10s}}\n"
        "resources:\n"
        f"  - name: emu\n    base_url: {emu.base_url}\n    auth: {{api_key: {API_KEY}}}\n"
        f"    deployments: [{deps}]\n"
        f"  - name: old-key\n    base_url: {emu.base_url}\n    auth: {{api_key: '${{ROTATED_KEY}}'}}\n"
        "    deployments: [{name: rotated, model: claude-haiku-4-5}]\n"
        f"  - name: entra\n    base_url: {emu.base_url}\n    auth: {{entra: {{}}}}\n"
        "    deployments: [{name: entra-ok, model: claude-haiku-4-5}, "
        "{name: entra-expired, model: claude-haiku-4-5}]\n")


class Issued:
    """Every Entra token the emulator's identity endpoint handed out."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.tokens: list[str] = []
        issue = emu.state.issue_token

        def recording(resource: str) -> tuple[str, int]:
            token, expires = issue(resource)
            self.tokens.append(token)
            return token, expires

        emu.state.issue_token = recording  # type: ignore[method-assign]


@contextmanager
def started(args: list[str], env: dict[str, str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    with out.with_suffix(".out").open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr, \
            monitor_process(args, stdout=stdout, stderr=stderr, env=env) as proc:
        yield proc


CRASH = """
import sys
from monitor import cli
from monitor.daemon import scheduler

def start(self):
    raise RuntimeError("injected: the scheduler failed to start")

scheduler.CanaryScheduler.start = start
sys.exit(cli.main(sys.argv[1:]))
"""


def run_all(commands: dict[str, list[str]], env: dict[str, str], where: Path) -> dict[str, int]:
    """Run CLI commands side by side; their stdout and stderr land in where/NAME.out and .err."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files = []
    try:
        for name, args in commands.items():
            out, err = (where / f"{name}.out").open("wb"), (where / f"{name}.err").open("wb")
            files += [out, err]
            command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "monitor", *args]
            procs[name] = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        return {name: p.wait(60) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for f in files:
            f.close()


def mail_text(raw: bytes) -> str:
    """The raw message and every decoded part (base64 or quoted-printable could hide a secret)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [raw.decode("utf-8", "replace")]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


def replay_as_yesterday(path: Path) -> None:
    """Store this run's canaries, state changes and incidents once more, a day earlier."""
    day = 86400.0
    store = Store.open(path, timezone="UTC")
    try:
        rows = [tuple(r)[1:] for r in store.query("SELECT * FROM results ORDER BY id")]  # without the id
        store.save_results([(r[0] - day, *r[1:]) for r in rows])
        for t in store.query("SELECT * FROM transitions"):
            store.add_transition(t["resource"], t["deployment"], datetime.fromtimestamp(t["at"] - day, UTC),
                                 t["from_state"], t["to_state"], t["kind"], t["hint"], t["request_id"],
                                 t["apim_request_id"], t["reason"])
        for i in store.query("SELECT * FROM incidents"):
            started = datetime.fromtimestamp(i["started_at"] - day, UTC)
            store.open_incident(i["resource"], i["deployment"], i["kind"], started, i["first_kind"],
                                i["hint"], i["request_id"], i["apim_request_id"])
    finally:
        store.close()


def store_dump(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(conn.iterdump())


def files_under(root: Path) -> dict[str, str]:
    return {f"file:{p.relative_to(root)}": p.read_bytes().decode("utf-8", "replace")
            for p in sorted(root.rglob("*")) if p.is_file()}


def http(port: int, path: str, token: str | None = BEARER) -> str:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)
    return f"{r.status_code} {dict(r.headers)}\n{r.text}"


@pytest.mark.timeout(150)
def test_no_secret_in_any_output_of_a_full_cycle(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS}
    blobs: dict[str, str] = {}
    with EmulatorServer(scenario=emulator_scenario()) as emu, capture_server() as cap, \
            smtp_server(certs) as (inbox, smtp_port):
        issued = Issued(emu)
        env |= emu.identity_env() | {"ROTATED_KEY": ROTATED_KEY,
                                     "SMTP_PASSWORD_FILE": str(tmp_path / "smtp-password")}
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(config_text(emu, data, cap.connection_string, smtp_port, certs.ca))
        wrong = tmp_path / "wrong-password.yaml"
        wrong.write_text(config_text(emu, data, cap.connection_string, smtp_port, certs.ca,
                                     password=WRONG_PASSWORD))
        port = free_port()
        daemon_args = ["run", "--config", str(cfg), "--port", str(port), "--log-format", "json",
                       "--log-level", "debug", "--telemetry-debug", "--location", "lab-1"]
        with started(daemon_args, env, out / "daemon") as proc:
            wait_for(lambda: ready(port), 30)  # the store exists (a store being created is not shared yet)
            # the one-shot commands run beside the daemon (the emulator serves both)
            codes = run_all({
                "validate": ["validate", "--config", str(cfg)],
                "check-json": ["check", "--config", str(cfg), "--format", "json"],
                "check-text": ["check", "--config", str(cfg)],
                # an internal error (injected as the scheduler starts) with the traceback at debug level
                "crash": ["-c", CRASH, "run", "--config", str(cfg), "--port", "0", "--log-level", "debug",
                          "--log-format", "json"],
            }, env, out)
            wait_for(lambda: len(inbox.messages) >= 1, 60)  # the daemon's weekly email, over STARTTLS + login
            wait_for(lambda: len(issued.tokens) >= 1, 30)
            before = len(issued.tokens)
            httpx.post(f"{emu.root}/_emulator/identity/expire", timeout=5)  # 401 -> token dropped -> new one
            wait_for(lambda: len(issued.tokens) > before, 30)
            # a reload of a broken file: its error goes to the log, /status and AppTraces (MessageData)
            good = cfg.read_text()
            cfg.write_text(config_text(emu, data, cap.connection_string, smtp_port, certs.ca,
                                       interval="${ROTATED_KEY}"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: '"event": "reload"' in (out / "daemon.err").read_text(), 20)
            cfg.write_text(good)
            wanted = {"RemoteDependencyData", "AvailabilityData", "EventData", "MessageData", "MetricData"}
            assert cap.wait_for(lambda c: all(c.of_type(t) for t in wanted), 30), \
                sorted({e["data"]["baseType"] for e in cap.envelopes})
            blobs["http:/"] = http(port, "/")
            blobs["http:/status"] = http(port, "/status")
            blobs["http:/status without the token"] = http(port, "/status", None)
            blobs["http:/metrics"] = http(port, "/metrics")
            blobs["http:/healthz"] = http(port, "/healthz") + http(port, "/readyz")
            status = json.loads(blobs["http:/status"].split("\n", 1)[1])
            for d in status["deployments"]:
                for name in (d["deployment"], f"{d['resource']}/{d['deployment']}"):
                    blobs[f"http:/debug/{name}"] = http(port, f"/debug/{name}")
            blobs["http:/debug/unknown"] = http(port, "/debug/unknown")
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        assert proc.returncode == 0
        blobs["envelopes"] = json.dumps(cap.envelopes)
        blobs["ingestion requests"] = json.dumps(cap.requests)
        replay_as_yesterday(data / "results.sqlite3")  # reports cover whole days: give them this run
        reports = {f"report-{fmt}": ["report", "--config", str(cfg), "--format", fmt, "--days", "2"]
                   for fmt in ("text", "markdown", "html", "json", "csv")}
        codes |= run_all(reports | {
            "report-email": ["report", "--config", str(cfg), "--email", "--to", "me@example.com"],
            "report-email-wrong-password": ["report", "--config", str(wrong), "--email", "--to",
                                            "me@example.com"],
        }, env, out)
        messages = list(inbox.messages)
        tokens = list(issued.tokens)
    for name in ("validate", "report-email", *reports):
        assert codes[name] == 0, (name, (out / f"{name}.err").read_text()[-2000:])
    assert codes["check-json"] == codes["check-text"] == 1  # failures, as planted
    assert codes["crash"] == 3 and codes["report-email-wrong-password"] == 1
    for i, raw in enumerate(messages):
        blobs[f"email {i}"] = mail_text(raw)
    blobs |= {f"cli:{p.name}": p.read_text(errors="replace") for p in sorted(out.iterdir())}
    blobs["store"] = store_dump(data / "results.sqlite3")
    blobs |= files_under(data)

    # the cycle really happened: each place holds what it should, so an absent secret means something
    assert len(messages) == 2 and len(tokens) >= 2
    daemon_log = blobs["cli:daemon.err"]
    seen_kinds = {json.loads(line).get("kind") for line in daemon_log.splitlines()
                  if line.startswith("{") and '"event": "canary"' in line}
    assert EXPECTED_KINDS <= seen_kinds, EXPECTED_KINDS - seen_kinds
    assert "Traceback" in blobs["cli:crash.err"]
    assert '"name": "chat bad-key"' in daemon_log  # --telemetry-debug printed the spans
    assert "535" in blobs["cli:report-email-wrong-password.err"]
    assert "${ROTATED_KEY}" in daemon_log  # the reload error names what was written, not its value
    # the scan saw the failing canaries (the rest depends on timing: reports, status, envelopes)
    lacking = [k for k in ("cli:check-json.out", "cli:check-text.out", "store")
               if "invalid_api_key" not in blobs[k]]
    assert lacking == []
    assert blobs["http:/status without the token"].startswith("401")
    assert "rotated" in blobs["email 0"] and "rotated" in blobs["cli:report-html.out"]

    secrets = {"API key": API_KEY, "rotated API key": ROTATED_KEY, "SMTP password": PASSWORD,
               "wrong SMTP password": WRONG_PASSWORD, "bearer token": BEARER,
               "identity header": IDENTITY_HEADER, "Entra token prefix": TOKEN_PREFIX}
    secrets |= {f"Entra token {i}": t for i, t in enumerate(tokens)}
    secrets |= {f"Entra token {i} (random part)": t.removeprefix(TOKEN_PREFIX) for i, t in enumerate(tokens)}
    leaks = sorted(f"{what} in {where}" for where, text in blobs.items()
                   for what, secret in secrets.items() if secret in text)
    assert leaks == [], leaks
    assert len(blobs) > 40


@pytest.mark.timeout(60)
def test_a_key_with_a_trailing_newline_is_never_printed(tmp_path: Path) -> None:
    """A key taken from an environment variable that kept its newline (a Kubernetes secret mounted with
    secretKeyRef, an .env file): the request cannot be sent, and the message must not carry the key."""
    leaky = API_KEY + "\n"
    with EmulatorServer(scenario={"api_key": API_KEY, "deployments": [{"name": "healthy"}]}) as emu:
        cfg = tmp_path / "checks.yaml"
        cfg.write_text(f"data_dir: {json.dumps(str(tmp_path / 'data'))}\n"
                       f"resources:\n  - name: emu\n    base_url: {emu.base_url}\n"
                       "    auth: {api_key: '${FOUNDRY_KEY}'}\n    deployments: [{name: healthy}]\n")
        env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS} | {"FOUNDRY_KEY": leaky}
        outputs = [subprocess.run([sys.executable, "-m", "monitor", "check", "--config", str(cfg), *fmt],
                                  capture_output=True, text=True, timeout=30, env=env)
                   for fmt in ([], ["--format", "json"])]
    text = "".join(o.stdout + o.stderr for o in outputs)
    assert "healthy" in text  # the canary ran and was reported
    assert API_KEY not in text, text
