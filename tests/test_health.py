"""The per-deployment state machine, driven by hand-made results and an injected, stepped time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from monitor.canary.results import CanaryResult, FailureKind, Timings, Verdict
from monitor.config import CheckSettings
from monitor.daemon.health import Change, HealthTracker, Incident, Key, State, Transition

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
KEY: Key = ("res-a", "claude-sonnet")
OTHER: Key = ("res-b", "claude-haiku")
STEP = timedelta(seconds=60)
LETTER = {"U": State.UNKNOWN, "H": State.HEALTHY, "D": State.DEGRADED, "T": State.THROTTLED, "X": State.DOWN}


def settings(**over: object) -> CheckSettings:
    base: dict[str, object] = {"interval": "60s", "timeout": "30s", "failure_threshold": 3,
                               "success_threshold": 2, "latency_slo": "10s"}
    return CheckSettings.model_validate({**base, **over})


def canary(kind: FailureKind = FailureKind.OK, *, total: float | None = 1.0, ttft: float | None = 0.5,
           request_id: str | None = None, apim: str | None = None, key: Key = KEY) -> CanaryResult:
    return CanaryResult(
        resource=key[0], deployment=key[1], model="claude-sonnet-4-5", location="eastus2", started_at=T0,
        verdict=Verdict(kind, f"hint: {kind}"), status_code=200 if kind is FailureKind.OK else 500,
        timings=Timings(total_s=total, ttft_s=ttft), usage=None, request_id=request_id,
        apim_request_id=apim, response_model=None, stop_reason=None)


def shorthand(code: str, n: int, key: Key = KEY) -> CanaryResult:
    """good | slow | 429 | fail | cancel, with request ids req-N / apim-N."""
    kind = {"429": FailureKind.RATE_LIMITED, "fail": FailureKind.SERVER_ERROR,
            "cancel": FailureKind.CANCELLED}.get(code, FailureKind.OK)
    total = 12.3 if code == "slow" else 1.0
    return canary(kind, total=total, request_id=f"req-{n}", apim=f"apim-{n}", key=key)


class Run:
    """A tracker with a clock that moves one minute per result."""

    def __init__(self, **over: object) -> None:
        self.tracker = HealthTracker()
        self.settings = settings(**over)
        self.now = T0
        self.n = 0

    def feed(self, *codes: str) -> list[Change | None]:
        out = []
        for code in codes:
            self.n += 1
            self.now += STEP
            out.append(self.tracker.observe(shorthand(code, self.n), self.settings, self.now))
        return out

    def at(self, n: int) -> datetime:
        return T0 + n * STEP

    @property
    def state(self) -> State:
        return self.tracker.states()[KEY].state


# One row per rule: results fed one a minute, then the expected state after each
# (U unknown, H healthy, D degraded, T throttled, X down); failure_threshold 3, success_threshold 2.
TABLE = [
    ("a good first result makes an unknown deployment healthy", "good", "H"),
    ("a slow first result makes an unknown deployment degraded", "slow", "D"),
    ("a 429 first result makes an unknown deployment throttled", "429", "T"),
    ("a first failure makes an unknown deployment degraded not down", "fail", "D"),
    ("down comes exactly at the third consecutive failure", "good fail fail fail", "H D D X"),
    ("an ok result resets the failure streak", "good fail fail good fail fail fail", "H D D D D D X"),
    ("a slow result also resets the failure streak", "fail fail slow fail fail", "D D D D D"),
    ("a 429 resets the failure streak", "fail fail 429 fail fail fail", "D D T T T X"),
    ("one slow result degrades a healthy deployment", "good slow", "H D"),
    ("one failure degrades a healthy deployment", "good fail", "H D"),
    ("degraded recovers after two good results", "good slow good good", "H D D H"),
    ("a slow result restarts the good streak", "good slow good slow good good", "H D D D D H"),
    ("down recovers only after two good results", "fail fail fail good good", "D D X X H"),
    ("a failure during recovery restarts it", "fail fail fail good fail good good", "D D X X X X H"),
    ("slow results while recovering from down lead to degraded", "fail fail fail slow slow good good",
     "D D X X D D H"),
    ("a good then a slow result while recovering lead to degraded", "fail fail fail good slow", "D D X X D"),
    ("a 429 moves a down deployment to throttled", "fail fail fail 429", "D D X T"),
    ("a 429 moves a healthy deployment to throttled", "good 429", "H T"),
    ("a 429 moves a degraded deployment to throttled", "slow 429", "D T"),
    ("throttled stays throttled on more 429s", "429 429 429", "T T T"),
    ("throttled recovers after two good results", "429 good good", "T T H"),
    ("throttled recovers slowly to degraded", "429 slow slow", "T T D"),
    ("a failure below the threshold keeps throttled", "429 fail", "T T"),
    ("throttled goes down after three failures", "429 fail fail fail", "T T T X"),
    ("a cancelled result neither resets nor extends the failure streak", "fail fail cancel fail", "D D D X"),
    ("a cancelled result does not count towards recovery", "fail fail fail good cancel good",
     "D D X X X H"),
]


@pytest.mark.parametrize(("codes", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_states_follow_the_rules(codes: str, expected: str) -> None:
    run = Run()
    seen = []
    for code in codes.split():
        run.feed(code)
        seen.append(run.state)
    assert seen == [LETTER[c] for c in expected.split()]


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_down_comes_exactly_at_the_failure_threshold_and_not_before(threshold: int) -> None:
    run = Run(failure_threshold=threshold)
    run.feed("good")
    for _ in range(threshold - 1):
        run.feed("fail")
        assert run.state is State.DEGRADED
    (change,) = run.feed("fail")
    assert run.state is State.DOWN and change is not None
    expected = "1 failure" if threshold == 1 else f"{threshold} consecutive failures"
    assert change.transition.reason == expected


@pytest.mark.parametrize("threshold", [1, 2, 4])
def test_recovery_from_down_comes_exactly_at_the_success_threshold(threshold: int) -> None:
    run = Run(failure_threshold=1, success_threshold=threshold)
    run.feed("fail")
    for _ in range(threshold - 1):
        assert run.feed("good") == [None]
        assert run.state is State.DOWN
    run.feed("good")
    assert run.state is State.HEALTHY


def test_counters_count_consecutive_results_and_reset_on_the_opposite_kind() -> None:
    run = Run()
    run.feed("good", "good", "slow")
    view = run.tracker.states()[KEY]
    assert (view.consecutive_failures, view.consecutive_ok, view.consecutive_good) == (0, 3, 0)
    run.feed("fail", "fail")
    view = run.tracker.states()[KEY]
    assert (view.consecutive_failures, view.consecutive_ok, view.consecutive_good) == (2, 0, 0)
    run.feed("good")
    view = run.tracker.states()[KEY]
    assert (view.consecutive_failures, view.consecutive_ok, view.consecutive_good) == (0, 1, 1)
    run.feed("429")
    view = run.tracker.states()[KEY]
    assert (view.consecutive_failures, view.consecutive_ok, view.consecutive_good) == (0, 0, 0)


def test_the_status_view_shows_the_last_failure_with_its_request_ids() -> None:
    run = Run()
    run.feed("good", "fail", "good")
    view = run.tracker.states()[KEY]
    assert view.last_failure is not None
    assert (view.last_failure.kind, view.last_failure.request_id, view.last_failure.apim_request_id,
            view.last_failure.at) == (FailureKind.SERVER_ERROR, "req-2", "apim-2", run.at(2))
    assert view.last_failure.hint == "hint: server_error"
    assert (view.state, view.since, view.last_result_at) == (State.DEGRADED, run.at(2), run.at(3))


def test_a_cancelled_result_changes_neither_state_nor_counters_nor_last_result_time() -> None:
    run = Run()
    run.feed("good", "fail")
    before = run.tracker.states()
    assert run.feed("cancel") == [None]
    assert run.tracker.states() == before


def test_a_cancelled_result_for_a_new_deployment_creates_nothing() -> None:
    run = Run()
    run.feed("cancel")
    assert run.tracker.states() == {}


def test_a_ttft_above_its_slo_degrades_and_says_so() -> None:
    tracker = HealthTracker()
    change = tracker.observe(canary(total=4.0, ttft=3.0), settings(ttft_slo="2s"), T0)
    assert change is not None and change.transition.new is State.DEGRADED
    assert change.transition.reason == "ttft 3.0s above SLO 2s"


def test_missing_timings_on_an_ok_result_do_not_count_as_slow() -> None:
    tracker = HealthTracker()
    tracker.observe(canary(total=None, ttft=None), settings(ttft_slo="2s"), T0)
    assert tracker.states()[KEY].state is State.HEALTHY


def test_a_slow_result_explains_the_latency_against_the_slo() -> None:
    run = Run()
    (change,) = run.feed("slow")
    assert change is not None and change.transition.reason == "latency 12.3s above SLO 10s"


def test_transitions_carry_the_previous_state_and_its_duration() -> None:
    tracker = HealthTracker()
    first = tracker.observe(canary(), settings(), T0)
    assert first is not None
    assert (first.transition.previous, first.transition.previous_since) == (State.UNKNOWN, None)
    assert first.transition.previous_duration_s is None
    later = tracker.observe(canary(total=12.3), settings(), T0 + timedelta(seconds=90))
    assert later is not None
    assert later.transition.previous is State.HEALTHY and later.transition.previous_since == T0
    assert later.transition.previous_duration_s == 90.0
    assert later.transition.at == T0 + timedelta(seconds=90)


def test_a_transition_carries_the_kind_hint_and_request_ids_of_its_result() -> None:
    run = Run(failure_threshold=1)
    (change,) = run.feed("fail")
    assert change is not None
    t = change.transition
    assert (t.kind, t.hint, t.request_id, t.apim_request_id) == (
        FailureKind.SERVER_ERROR, "hint: server_error", "req-1", "apim-1")


def test_log_fields_form_a_structured_state_change_event() -> None:
    run = Run()
    run.feed("good")
    (change,) = run.feed("429")
    assert change is not None
    fields = change.transition.log_fields()
    assert fields == {"event": "state_change", "resource": "res-a", "deployment": "claude-sonnet",
                      "from": "healthy", "to": "throttled", "kind": "rate_limited",
                      "hint": "hint: rate_limited", "request_id": "req-2", "apim_request_id": "apim-2",
                      "previous_duration_s": 60.0, "reason": "rate limited: quota exhausted"}
    json.dumps(fields)


def test_no_change_is_reported_when_the_state_stays_the_same() -> None:
    run = Run()
    assert [c is None for c in run.feed("good", "good", "slow", "slow")] == [False, True, False, True]


# --- incidents ---------------------------------------------------------------------------------


def test_going_down_opens_an_incident_with_the_first_failures_request_ids() -> None:
    run = Run()
    changes = run.feed("good", "fail", "fail", "fail")
    down = changes[-1]
    assert down is not None and down.closed is None
    expected = Incident(KEY, State.DOWN, run.at(2), FailureKind.SERVER_ERROR, "hint: server_error",
                        "req-2", "apim-2")
    assert down.opened == expected
    assert down.transition.request_id == "req-4"
    assert run.tracker.open_incidents() == [expected]
    assert all(c is None or c.opened is None for c in changes[:-1])


def test_an_ok_result_moves_the_first_failure_of_the_streak_forward() -> None:
    run = Run()
    *_, down = run.feed("fail", "good", "fail", "fail", "fail")
    assert down is not None and down.opened is not None
    assert (down.opened.request_id, down.opened.started_at) == ("req-3", run.at(3))


def test_recovery_closes_the_incident_at_the_recovery_time() -> None:
    run = Run()
    run.feed("fail", "fail", "fail")
    *_, up = run.feed("good", "good")
    assert up is not None and up.opened is None and up.closed is not None
    assert up.closed.ended_at == run.at(5)
    assert (up.closed.state, up.closed.request_id, up.closed.started_at) == (State.DOWN, "req-1", run.at(1))
    assert run.tracker.open_incidents() == []


def test_a_429_opens_a_throttled_incident_once_and_recovery_closes_it() -> None:
    run = Run()
    first, again, _, up = run.feed("429", "429", "good", "good")
    assert first is not None and first.opened is not None
    assert (first.opened.state, first.opened.kind, first.opened.request_id) == (
        State.THROTTLED, FailureKind.RATE_LIMITED, "req-1")
    assert again is None
    assert up is not None and up.closed is not None and up.closed.state is State.THROTTLED


def test_down_to_throttled_closes_the_down_incident_and_opens_a_throttled_one() -> None:
    run = Run()
    *_, change = run.feed("fail", "fail", "fail", "429")
    assert change is not None and change.closed is not None and change.opened is not None
    assert (change.closed.state, change.closed.ended_at) == (State.DOWN, run.at(4))
    assert (change.opened.state, change.opened.request_id) == (State.THROTTLED, "req-4")
    assert run.tracker.open_incidents() == [change.opened]


def test_a_degraded_deployment_opens_no_incident() -> None:
    run = Run()
    assert all(c is None or (c.opened, c.closed) == (None, None) for c in run.feed("good", "fail", "slow"))
    assert run.tracker.open_incidents() == []


# --- silence -----------------------------------------------------------------------------------


def test_silence_longer_than_three_intervals_plus_timeout_makes_a_deployment_unknown() -> None:
    tracker = HealthTracker()
    tracker.observe(canary(), settings(), T0)
    assert tracker.check_silence(T0 + timedelta(seconds=210)) == []
    (silent,) = tracker.check_silence(T0 + timedelta(minutes=5))
    assert (silent.previous, silent.new, silent.kind, silent.request_id) == (
        State.HEALTHY, State.UNKNOWN, None, None)
    assert (silent.reason, silent.previous_duration_s) == ("no result for 5m", 300.0)
    assert tracker.states()[KEY].state is State.UNKNOWN
    assert tracker.check_silence(T0 + timedelta(minutes=10)) == []


def test_a_deployment_never_observed_stays_unknown_without_a_transition() -> None:
    tracker = HealthTracker()
    tracker.expect(KEY, 60, 30)
    assert tracker.check_silence(T0 + timedelta(days=1)) == []
    assert tracker.states()[KEY].state is State.UNKNOWN


def test_expect_stretches_the_staleness_limit_while_throttled() -> None:
    tracker = HealthTracker()
    tracker.observe(canary(FailureKind.RATE_LIMITED), settings(), T0)
    tracker.expect(KEY, 600, 30)
    assert tracker.check_silence(T0 + timedelta(seconds=1830)) == []
    assert len(tracker.check_silence(T0 + timedelta(seconds=1831))) == 1


def test_expect_wins_over_the_interval_of_the_settings() -> None:
    tracker = HealthTracker()
    tracker.expect(KEY, 300, 30)
    tracker.observe(canary(), settings(interval="60s"), T0)
    assert tracker.check_silence(T0 + timedelta(seconds=930)) == []


def test_a_cancelled_result_is_no_sign_of_life() -> None:
    tracker = HealthTracker()
    tracker.observe(canary(), settings(), T0)
    tracker.observe(canary(FailureKind.CANCELLED), settings(), T0 + timedelta(seconds=200))
    assert len(tracker.check_silence(T0 + timedelta(seconds=211))) == 1


def test_silence_keeps_the_open_incident_and_the_failure_streak() -> None:
    run = Run()
    run.feed("fail", "fail", "fail")
    (silent,) = run.tracker.check_silence(run.at(10))
    assert silent.previous is State.DOWN
    assert [i.request_id for i in run.tracker.open_incidents()] == ["req-1"]
    run.now = run.at(11)
    (change,) = run.feed("fail")
    assert change is not None and (change.transition.previous, change.transition.new) == (
        State.UNKNOWN, State.DOWN)
    assert (change.opened, change.closed, change.transition.reason) == (None, None, "4 consecutive failures")


def test_after_silence_one_good_result_does_not_end_a_down_incident() -> None:
    run = Run()
    run.feed("fail", "fail", "fail")
    run.tracker.check_silence(run.at(10))
    run.now = run.at(11)
    first, second = run.feed("good", "good")
    assert first is not None and first.transition.new is State.DOWN and first.closed is None
    assert first.transition.reason == "still down: 1 of 2 ok results needed to recover"
    assert second is not None and second.transition.new is State.HEALTHY and second.closed is not None


def test_after_silence_a_healthy_deployment_is_healthy_again_at_its_first_good_result() -> None:
    run = Run()
    run.feed("good")
    run.tracker.check_silence(run.at(10))
    run.now = run.at(11)
    run.feed("good")
    assert run.state is State.HEALTHY


# --- forget, time ------------------------------------------------------------------------------


def test_forget_drops_the_deployment_and_returns_its_incident_closed() -> None:
    run = Run()
    run.feed("fail", "fail", "fail")
    closed = run.tracker.forget(KEY, run.at(9))
    assert closed is not None and closed.ended_at == run.at(9) and closed.request_id == "req-1"
    assert run.tracker.states() == {} and run.tracker.open_incidents() == []
    assert run.tracker.forget(KEY, run.at(10)) is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        HealthTracker().observe(canary(), settings(), datetime(2025, 3, 3, 9, 0))


# --- persistence -------------------------------------------------------------------------------


def restart(tracker: HealthTracker) -> HealthTracker:
    return HealthTracker.restore(json.loads(json.dumps(tracker.snapshot())))


def test_state_and_open_incidents_survive_a_restart() -> None:
    run = Run()
    run.feed("good", "fail", "fail", "fail")
    run.tracker.expect(KEY, 120, 30)
    restored = restart(run.tracker)
    assert restored.states() == run.tracker.states()
    assert restored.open_incidents() == run.tracker.open_incidents()
    run.tracker = restored
    *_, up = run.feed("good", "good")
    assert up is not None and up.closed is not None and up.closed.request_id == "req-2"


def test_an_incident_opened_after_the_last_snapshot_is_adopted_from_the_store_and_closes_on_recovery(
        ) -> None:
    run = Run()
    run.feed("good", "fail")
    snapshot = run.tracker.snapshot()  # the last one saved before the crash: degraded, no incident
    (opened,) = [c.opened for c in run.feed("fail", "fail") if c is not None and c.opened is not None]
    restored = HealthTracker.restore(json.loads(json.dumps(snapshot)))
    assert restored.open_incidents() == []
    restored.reconcile([opened])  # what the store has open
    assert restored.open_incidents() == [opened]
    assert restored.states()[KEY].state is State.DOWN
    run.tracker = restored
    *_, up = run.feed("good", "good")
    assert up is not None and up.closed is not None and up.closed.request_id == "req-2"
    assert restored.open_incidents() == []


def test_an_incident_closed_after_the_last_snapshot_is_dropped_on_restore() -> None:
    run = Run()
    run.feed("good", "fail", "fail", "fail")
    snapshot = run.tracker.snapshot()  # down, incident open
    run.feed("good", "good")  # closed in the store before the crash
    restored = HealthTracker.restore(json.loads(json.dumps(snapshot)))
    assert len(restored.open_incidents()) == 1
    restored.reconcile([])
    assert restored.open_incidents() == []


def test_the_silence_check_applies_normally_after_a_restart() -> None:
    run = Run()
    run.feed("good")
    restored = restart(run.tracker)
    assert restored.check_silence(run.at(4)) == []
    (silent,) = restored.check_silence(run.at(5))
    assert silent.new is State.UNKNOWN


def test_restore_drops_only_the_unreadable_entries() -> None:
    run = Run()
    run.feed("good")
    run.tracker.observe(shorthand("fail", 9, OTHER), run.settings, run.at(2))
    data = run.tracker.snapshot()
    data["deployments"][1]["state"] = "sideways"
    assert list(HealthTracker.restore(data).states()) == [KEY]


def test_restore_fills_in_fields_an_old_snapshot_lacks_and_ignores_extra_ones() -> None:
    data = {"deployments": [{"resource": "r", "deployment": "d", "state": "down", "colour": "red"}],
            "future": True}
    view = HealthTracker.restore(data).states()[("r", "d")]
    assert (view.state, view.since, view.consecutive_failures, view.incident) == (State.DOWN, None, 0, None)


def _entry(**over: Any) -> dict[str, Any]:
    base = {"resource": "r", "deployment": "d", "state": "healthy", "since": T0.isoformat()}
    return {"deployments": [{**base, **over}]}


GARBAGE: list[object] = [
    None, [], "snapshot", 42, {}, {"deployments": "nope"}, {"deployments": [1, "x", None, [], {}]},
    _entry(state="sideways"), _entry(state=None), _entry(resource=7), _entry(since="yesterday"),
    _entry(since=12), _entry(consecutive_failures=-1), _entry(consecutive_ok=True),
    _entry(consecutive_good="2"), _entry(interval_s="60"), _entry(interval_s=float("nan")),
    _entry(timeout_s=0), _entry(last_failure={"kind": "exploded", "at": T0.isoformat()}),
    _entry(last_failure={"kind": "timeout"}), _entry(first_failure="req-1"),
    _entry(incident={"state": "healthy", "started_at": T0.isoformat(), "kind": "timeout"}),
    _entry(incident={"state": "down", "kind": "timeout"}), _entry(incident=[]),
    {"version": 999, "deployments": [{"resource": "r"}]},
]


@pytest.mark.parametrize("data", GARBAGE, ids=[f"garbage-{i}" for i in range(len(GARBAGE))])
def test_restoring_a_garbage_snapshot_does_not_raise_and_leaves_a_usable_tracker(data: object) -> None:
    tracker = HealthTracker.restore(data)
    assert ("r", "d") not in tracker.states()
    tracker.observe(canary(), settings(), T0)
    assert tracker.check_silence(T0 + timedelta(hours=1))
    json.dumps(tracker.snapshot())


# Random histories over two deployments: a restart at any point changes nothing, now or later.
CODES = ["good", "slow", "429", "fail", "cancel", "silence", "expect"]
step = st.tuples(st.sampled_from(CODES), st.integers(1, 400), st.sampled_from([KEY, OTHER]))


def play(tracker: HealthTracker, cfg: CheckSettings, steps: list[tuple[str, int, Key]], now: datetime,
         n: int = 0) -> tuple[list[Change | list[Transition] | None], datetime]:
    out: list[Change | list[Transition] | None] = []
    for i, (code, gap, key) in enumerate(steps, start=n):
        now += timedelta(seconds=gap)
        if code == "silence":
            out.append(tracker.check_silence(now))
        elif code == "expect":
            tracker.expect(key, gap, 30)
        else:
            out.append(tracker.observe(shorthand(code, i, key), cfg, now))
    return out, now


@hsettings(database=None, deadline=None, max_examples=150)
@given(st.lists(step, max_size=30), st.lists(step, max_size=10), st.integers(1, 4), st.integers(1, 3))
def test_a_snapshot_round_trip_preserves_everything_the_tracker_knows(
        before: list[tuple[str, int, Key]], after: list[tuple[str, int, Key]], ft: int, sth: int) -> None:
    cfg = settings(failure_threshold=ft, success_threshold=sth)
    tracker = HealthTracker()
    _, now = play(tracker, cfg, before, T0)
    restored = restart(tracker)
    assert restored.snapshot() == tracker.snapshot()
    assert restored.states() == tracker.states()
    assert restored.open_incidents() == tracker.open_incidents()
    assert play(restored, cfg, after, now, 100) == play(tracker, cfg, after, now, 100)
