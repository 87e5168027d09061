"""The store's lease: one live daemon per fleet, location and shard; stale leases are taken over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import LeaseHeld
from monitor.store.lease import TTL_S, Lease
from monitor.store.sqlite import Store

FLEET = [("emu", f"dep-{i}") for i in range(6)]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "results.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_a_second_daemon_with_the_same_fleet_is_refused_naming_the_holder_and_the_way_out(
        store: Store) -> None:
    clock = Clock()
    Lease(store, FLEET, now=clock, pid=4242, host="box-a").acquire()
    clock.t += 3
    with pytest.raises(LeaseHeld) as caught:
        Lease(store, FLEET, now=clock, pid=4243, host="box-b").acquire()
    message = str(caught.value)
    assert "\n" not in message
    assert "pid 4242 on host box-a" in message and "heartbeat 3s ago" in message
    assert "6 of these deployments" in message and store.path in message
    assert "--shard I/N (same N)" in message and "--location" in message


def test_a_fleet_that_shares_one_deployment_overlaps(store: Store) -> None:
    Lease(store, FLEET[:3], host="box-a").acquire()
    with pytest.raises(LeaseHeld, match="1 of these deployments"):
        Lease(store, FLEET[2:], host="box-b").acquire()


def test_distinct_shards_of_one_count_and_distinct_locations_run_side_by_side(store: Store) -> None:
    from monitor.canary.fleet import in_shard

    shards = [Lease(store, [k for k in FLEET if in_shard(*k, (i, 3))], shard=(i, 3), host=f"box-{i}")
              for i in range(3)]
    for lease in shards:
        lease.acquire()
    Lease(store, FLEET, location="westeurope", host="box-3").acquire()
    Lease(store, FLEET, location="eastus", host="box-4").acquire()
    assert len(shards[0].holders()) == 5
    with pytest.raises(LeaseHeld, match="shard 1/3"):
        Lease(store, [k for k in FLEET if in_shard(*k, (1, 3))], shard=(1, 3), host="box-5").acquire()


def test_a_holder_whose_heartbeat_expired_is_taken_over_and_said_so(store: Store) -> None:
    clock = Clock()
    Lease(store, FLEET, now=clock, pid=4242, host="other-host").acquire()
    clock.t += TTL_S - 1
    with pytest.raises(LeaseHeld):
        Lease(store, FLEET, now=clock, host="this-host").acquire()
    clock.t += 2  # now past the expiry: the holder stopped renewing (crashed)
    mine = Lease(store, FLEET, now=clock, host="this-host")
    taken = mine.acquire()
    assert [(h.pid, h.host) for h, _ in taken] == [(4242, "other-host")]
    assert "heartbeat stopped 21s ago" in taken[0][1]
    assert [h.id for h in mine.holders()] == [mine.id]


def test_renewing_keeps_the_lease_alive_past_its_first_expiry(store: Store) -> None:
    clock = Clock()
    holder = Lease(store, FLEET, now=clock, host="other-host")
    holder.acquire()
    for _ in range(5):
        clock.t += TTL_S / 2
        assert holder.renew()
    with pytest.raises(LeaseHeld):
        Lease(store, FLEET, now=clock, host="this-host").acquire()


def test_a_holder_on_this_host_whose_process_is_gone_is_taken_over_before_its_expiry(store: Store) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(done.stdout)
    Lease(store, FLEET, pid=dead_pid).acquire()
    taken = Lease(store, FLEET).acquire()
    assert [h.pid for h, _ in taken] == [dead_pid]
    assert taken[0][1] == "its process is gone"


def test_a_released_lease_lets_the_next_daemon_in_and_a_lost_one_is_reported_by_renew(store: Store) -> None:
    clock = Clock()
    first = Lease(store, FLEET, now=clock, host="a")
    first.acquire()
    first.release()
    assert not first.held
    second = Lease(store, FLEET, now=clock, host="b")
    assert second.acquire() == []
    clock.t += TTL_S + 1  # second stalls past its expiry; a third takes over
    Lease(store, FLEET, now=clock, host="c").acquire()
    assert second.renew() is False
    with pytest.raises(LeaseHeld, match="on host c"):
        second.acquire()
