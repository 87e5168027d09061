"""The weekly email: a real SMTP server (aiosmtpd, STARTTLS with a trustme certificate, login) receives
a multipart/alternative message whose every cid: resolves; scheduling with an injected clock across a
DST change sends exactly once a week; restarts, missed sends, replicas, transient and permanent errors."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from monitor import config as config_mod
from monitor.notify import Email, NotifyError
from monitor.notify.acs import AcsNotifier
from monitor.notify.smtp import SmtpNotifier
from monitor.notify.weekly import JOB, WeeklyJob, compose, control_plane_lines, due
from monitor.reports.build import build_report
from monitor.reports.local import LocalSource
from monitor.reports.model import Report
from monitor.store.sqlite import Store

from .certs import Certs, make_certs
from .fake_acs import KEY as KEY_TEXT
from .fake_acs import fake_acs
from .loopback import free_port
from .report_seed import NOW, seed
from .test_reports import CONFIG, fill

PASSWORD = "smtp-pass-0d9f-secret"
USER = "monitor@example.com"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.answers: list[str] = []  # what DATA answers, in turn; then 250

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.answers:
            return self.answers.pop(0)
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("smtp-tls"))


@contextmanager
def smtp_server(certs: Certs) -> Iterator[tuple[Inbox, int]]:
    """aiosmtpd on loopback with STARTTLS and login: the inbox and its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.chain, certs.key)
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp(certs: Certs) -> Iterator[tuple[Inbox, int]]:
    with smtp_server(certs) as server:
        yield server


def weekly_config(port: int, certs: Certs, tz: str = "Europe/Berlin", extra: str = "") -> config_mod.Config:
    return config_mod.loads(weekly_config_text(port, certs, tz=tz, extra=extra), "test", env={})


def weekly_config_text(port: int, certs: Certs, data: Path | None = None, tz: str = "Europe/Berlin",
                       extra: str = "") -> str:
    if data is not None:
        extra += f"data_dir: {data / 'data'}\n"
    return CONFIG.format(tz=tz).replace(
        f"reports: {{timezone: {tz}, slo_target: 99.5}}",
        f"reports:\n  timezone: {tz}\n  slo_target: 99.5\n  weekly: {{enabled: true, schedule: 'mon 08:00', "
        f"recipients: [team@example.com, lead@example.com]}}\n"
        f"email:\n  sender: {USER}\n  smtp: {{host: 127.0.0.1, port: {port}, security: starttls, "
        f"username: {USER}, password: {PASSWORD}, ca_file: {certs.ca}, timeout: 10s}}\n{extra}")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Report]:
    store = Store.open(tmp_path_factory.mktemp("weekly") / "r.sqlite3", timezone="Europe/Berlin")
    fill(store, seed(NOW, days=40))
    cf = config_mod.loads(CONFIG.format(tz="Europe/Berlin"), "t", env={})
    week, month = build_report(LocalSource(store), cf, NOW, days=7), build_report(LocalSource(store), cf, NOW)
    store.close()
    return week, month


def test_the_weekly_email_arrives_whole_over_starttls_with_login(smtp: tuple[Inbox, int], certs: Certs,
                                                                 reports: tuple[Report, Report]) -> None:
    inbox, port = smtp
    cfg = weekly_config(port, certs)
    week, month = reports
    mail = compose(week, month, USER, ("team@example.com", "lead@example.com"))
    assert cfg.email.smtp is not None
    SmtpNotifier(cfg.email.smtp).send(mail)
    assert len(inbox.messages) == 1
    raw = inbox.messages[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == USER and msg["To"] == "team@example.com, lead@example.com"
    assert re.fullmatch(r"foundry-monitor weekly: \d/3 deployments met SLO · 2026-11-18 – 2026-11-24",
                        str(msg["Subject"]))
    assert msg.get_content_type() == "multipart/alternative"
    text_part, related = msg.get_payload()  # type: ignore[misc]
    assert text_part.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    html = html_part.get_content()
    cids = re.findall(r'src="cid:([^"]+)"', html)
    attached = {str(p["Content-ID"]).strip("<>"): p for p in images}
    assert cids and set(cids) == set(attached)
    for part in attached.values():
        assert part.get_content_type() == "image/png" and part.get_content().startswith(b"\x89PNG")
    assert "<style" not in html and 'style="' in html  # inline CSS only
    opus = next(d for d in week.deployments if d.deployment == "opus")
    figure = f"{opus.availability_pct:.3f}%"
    assert figure in html and figure in text_part.get_content()  # the same numbers in both parts
    assert PASSWORD.encode() not in raw


def test_a_wrong_password_is_permanent_and_does_not_echo_the_secret(smtp: tuple[Inbox, int],
                                                                   certs: Certs) -> None:
    _, port = smtp
    cfg = weekly_config(port, certs)
    assert cfg.email.smtp is not None
    wrong = cfg.email.smtp.model_copy(update={"password": config_mod.Secret("not-the-" + PASSWORD)})
    with pytest.raises(NotifyError) as err:
        SmtpNotifier(wrong).send(Email(USER, ("a@example.com",), "s", "t", "<p>h</p>"))
    assert err.value.transient is False and "535" in str(err.value)
    assert PASSWORD not in str(err.value)


# --- the job: exactly once, retries, schedule ---------------------------------------------------------


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += timedelta(seconds=seconds)


class Outbox:
    """A Notifier fake at the seam (the SMTP path itself is tested above against a real server)."""

    name = "outbox"

    def __init__(self, errors: list[NotifyError] | None = None) -> None:
        self.sent: list[tuple[datetime, Email]] = []
        self.calls = 0
        self.errors = errors or []
        self.clock: Clock | None = None

    def send(self, mail: Email) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((self.clock.at if self.clock else datetime.now(UTC), mail))


def job(cfg: config_mod.Config, store: Store, outbox: Outbox, clock: Clock,
        reports: tuple[Report, Report]) -> WeeklyJob:
    outbox.clock = clock
    week, month = reports
    return WeeklyJob(cfg, store, outbox, lambda days, at: week if days == 7 else month, now=clock,
                     sleep=clock.sleep)


async def run_until(jobs: list[WeeklyJob], clock: Clock, end: datetime, step: timedelta) -> None:
    while clock.at < end:
        for j in jobs:
            await j.tick()
            await j.wait()
        clock.at += step


async def test_exactly_one_send_a_week_across_the_dst_change(tmp_path: Path, certs: Certs,
                                                             reports: tuple[Report, Report]) -> None:
    cfg = weekly_config(25, certs)
    store = Store.open(tmp_path / "s.sqlite3")
    clock, outbox = Clock(datetime(2026, 10, 12, 0, 0, tzinfo=UTC)), Outbox()
    await run_until([job(cfg, store, outbox, clock, reports)], clock, datetime(2026, 11, 4, tzinfo=UTC),
                    timedelta(minutes=7))
    local = [at.astimezone(ZoneInfo("Europe/Berlin")) for at, _ in outbox.sent]
    assert [d.date().isoformat() for d in local] == ["2026-10-12", "2026-10-19", "2026-10-26", "2026-11-02"]
    assert all(d.hour == 8 and d.minute < 7 for d in local)  # 08:00 local on both sides of 25 October
    assert store.get_state(JOB)["period"] == "2026-10-26/2026-11-01"
    store.close()


async def test_a_restart_does_not_resend_and_replicas_send_once(tmp_path: Path, certs: Certs,
                                                                reports: tuple[Report, Report]) -> None:
    cfg = weekly_config(25, certs)
    path = tmp_path / "shared.sqlite3"
    a, b = Store.open(path), Store.open(path)
    clock, outbox = Clock(datetime(2026, 11, 23, 7, 0, tzinfo=UTC)), Outbox()  # Monday 08:00 Berlin
    jobs = [job(cfg, a, outbox, clock, reports), job(cfg, b, outbox, clock, reports)]  # two processes
    await run_until(jobs, clock, datetime(2026, 11, 23, 9, 0, tzinfo=UTC), timedelta(minutes=1))
    assert len(outbox.sent) == 1
    restarted = job(cfg, Store.open(path), outbox, clock, reports)  # a new process, same week
    await run_until([restarted], clock, datetime(2026, 11, 24, 9, 0, tzinfo=UTC), timedelta(minutes=10))
    assert len(outbox.sent) == 1 and outbox.calls == 1
    a.close()
    b.close()


@pytest.mark.parametrize(("started", "sends"), [
    (datetime(2026, 11, 23, 10, 0, tzinfo=UTC), 1),   # down at 08:00, back three hours later: sent once
    (datetime(2026, 11, 24, 9, 0, tzinfo=UTC), 0),    # back after the 24 h grace: that week is skipped
])
async def test_a_send_missed_while_down_is_made_up_once_within_the_grace(
        tmp_path: Path, certs: Certs, reports: tuple[Report, Report], started: datetime, sends: int) -> None:
    cfg = weekly_config(25, certs)
    store = Store.open(tmp_path / "s.sqlite3")
    clock, outbox = Clock(started), Outbox()
    await run_until([job(cfg, store, outbox, clock, reports)], clock, started + timedelta(hours=5),
                    timedelta(minutes=1))
    assert len(outbox.sent) == sends
    store.close()


async def test_transient_errors_are_retried_with_backoff_and_permanent_ones_reported_once(
        tmp_path: Path, certs: Certs, reports: tuple[Report, Report],
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = weekly_config(25, certs)
    store = Store.open(tmp_path / "s.sqlite3")
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    clock = Clock(monday)
    outbox = Outbox([NotifyError("421 try later", transient=True), NotifyError("421 again", transient=True)])
    await run_until([job(cfg, store, outbox, clock, reports)], clock, monday + timedelta(minutes=2),
                    timedelta(minutes=1))
    assert len(outbox.sent) == 1 and outbox.calls == 3 and clock.slept == [30.0, 60.0]
    assert store.get_state(JOB)["status"] == "sent"

    store2 = Store.open(tmp_path / "s2.sqlite3")
    clock2 = Clock(monday)
    refusing = Outbox([NotifyError("550 mailbox unavailable", transient=False)] * 5)
    with caplog.at_level(logging.ERROR, logger="monitor.weekly"):
        await run_until([job(cfg, store2, refusing, clock2, reports)], clock2, monday + timedelta(hours=3),
                        timedelta(minutes=1))
    assert refusing.calls == 1 and refusing.sent == []
    assert store2.get_state(JOB)["status"] == "failed"
    assert len([r for r in caplog.records if "weekly email failed" in r.getMessage()]) == 1
    store.close()
    store2.close()


def test_due_is_none_outside_the_grace_and_names_the_seven_days(certs: Certs) -> None:
    cfg = weekly_config(25, certs)
    d = due(cfg, datetime(2026, 11, 23, 7, 30, tzinfo=UTC))
    assert d is not None and d.period == "2026-11-16/2026-11-22"
    assert due(cfg, datetime(2026, 11, 25, 7, 30, tzinfo=UTC)) is None


def test_report_email_sends_one_now_through_the_real_server(smtp: tuple[Inbox, int], certs: Certs,
                                                           tmp_path: Path) -> None:
    inbox, port = smtp
    data = tmp_path / "data"
    store = Store.open(data / "results.sqlite3", timezone="Europe/Berlin")
    fill(store, seed(datetime.now(UTC), days=9))
    store.close()
    cfg = tmp_path / "checks.yaml"
    text = (CONFIG.format(tz="Europe/Berlin").replace(
        "reports: {timezone: Europe/Berlin, slo_target: 99.5}",
        f"data_dir: {data}\nreports: {{timezone: Europe/Berlin}}\nemail:\n  sender: {USER}\n"
        f"  smtp: {{host: 127.0.0.1, port: {port}, username: {USER}, password: {PASSWORD}, "
        f"ca_file: {certs.ca}}}"))
    cfg.write_text(text)
    out = subprocess.run([sys.executable, "-m", "monitor", "report", "--config", str(cfg), "--email", "--to",
                          "me@example.com"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sent \"foundry-monitor weekly:" in out.stderr and PASSWORD not in out.stdout + out.stderr
    assert len(inbox.messages) == 1 and b"To: me@example.com" in inbox.messages[0]


def test_azure_communication_services_delivers_with_inline_images(certs: Certs,
                                                                  reports: tuple[Report, Report]) -> None:
    with fake_acs(certs.server) as acs:
        settings = config_mod.Acs(connection_string=config_mod.Secret(acs.connection_string))
        week, month = reports
        mail = compose(week, month, USER, ("team@example.com",))
        AcsNotifier(settings, connection_verify=certs.ca, retry_total=0).send(mail)
        acs.status = 503
        with pytest.raises(NotifyError) as transient:
            AcsNotifier(settings, connection_verify=certs.ca, retry_total=0).send(mail)
        acs.status = 400
        with pytest.raises(NotifyError) as permanent:
            AcsNotifier(settings, connection_verify=certs.ca, retry_total=0).send(mail)
    assert acs.bad_signatures == 0 and len(acs.sent) == 1
    sent = acs.sent[0]
    assert sent["recipients"]["to"] == [{"address": "team@example.com"}]
    cids = set(re.findall(r'src="cid:([^"]+)"', sent["content"]["html"]))
    assert cids == {a["contentId"] for a in sent["attachments"]}
    assert transient.value.transient is True and permanent.value.transient is False
    assert KEY_TEXT not in str(transient.value) + str(permanent.value)


def test_only_an_unsharded_daemon_or_shard_zero_sends(tmp_path: Path, certs: Certs) -> None:
    from .daemon_helpers import make_daemon

    text = weekly_config_text(25, certs, tmp_path)
    assert make_daemon(tmp_path, text).weekly is not None
    assert make_daemon(tmp_path, text, shard=(0, 2)).weekly is not None
    assert make_daemon(tmp_path, text, shard=(1, 2)).weekly is None


def test_email_charts_draw_their_labels() -> None:
    from pathlib import Path as _Path

    from monitor.notify.weekly import png
    from monitor.reports import charts

    if not any(_Path("/usr/share/fonts").rglob("DejaVuSans.ttf")):
        pytest.skip("DejaVu Sans is not installed (the test command installs fonts-dejavu-core)")
    labelled = png(charts.bar_chart("Canary cost per day", ["2026-11-01", "2026-11-02"], [1.0, 2.0]))
    blank = png(charts.bar_chart("", ["", ""], [1.0, 2.0]))
    assert labelled.startswith(b"\x89PNG") and labelled != blank  # the title and labels became pixels


def test_the_weeks_drift_and_retirement_warnings_are_a_section_of_the_email(
        tmp_path: Path, reports: tuple[Report, Report]) -> None:
    store = Store.open(tmp_path / "r.sqlite3")
    sub = "00000000-0000-0000-0000-00000000000a"
    store.add_inventory_events(NOW - timedelta(days=2), [
        {"kind": "drift", "subscription": sub, "account": "team-a", "deployment": "haiku",
         "field": "capacity",
         "before": "50", "after": "80"},
        {"kind": "retirement", "subscription": sub, "account": "team-a", "deployment": "sonnet",
         "field": "30", "before": "claude-sonnet-4-5 20250929", "after": "2026-12-20"}])
    store.add_inventory_events(NOW - timedelta(days=9), [  # the week before: not in this email
        {"kind": "added", "subscription": sub, "account": "team-a", "deployment": "old"}])
    lines = control_plane_lines(store, NOW - timedelta(days=7), NOW)
    store.close()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "team-a/sonnet: model claude-sonnet-4-5 20250929 retires on 2026-12-20 (30 days or less left)",
        "team-a/haiku: capacity changed from 50 to 80"]
    week, month = reports
    mail = compose(week, month, USER, ("team@example.com",), lines)
    assert "Changes in Azure" in mail.text and "capacity changed from 50 to 80" in mail.text
    assert "retires on 2026-12-20" in mail.html
