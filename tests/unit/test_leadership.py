"""Leader election: the pure Lease decisions (client-go's semantics), the write gate, and the elector against an
in-memory Lease endpoint with the API server's optimistic concurrency (a stale resourceVersion is a 409)."""

import json
import logging
from datetime import timedelta
from typing import Any

import kubernetes
import pytest

from access_hygiene.engine.leadership.lease import (
    Action,
    LeaseRecord,
    LeaseTiming,
    Observation,
    decide,
    fence,
    held_by_other,
    observe,
    process_identity,
    released,
    standby_wait,
)
from access_hygiene.k8s.errors import NotLeaderError
from access_hygiene.k8s.leader import GatedApiClient, LeaderElector, WriteGate, is_write, record_of
from tests.pinned_clock import PINNED_NOW, pinned_clock

pytestmark = pytest.mark.unit

TIMING = LeaseTiming()
T0 = PINNED_NOW


def held(holder: str, renewed_seconds_ago: float = 0.0, duration: int = 15) -> LeaseRecord:
    at = T0 - timedelta(seconds=renewed_seconds_ago)
    return LeaseRecord(holder, duration, at, at, 3)


def seen(record: LeaseRecord, seconds_ago: float) -> Observation:
    return Observation(record, "7", T0 - timedelta(seconds=seconds_ago))


def test_the_shipped_timing_is_client_gos_and_inconsistent_timings_are_refused() -> None:
    assert (TIMING.lease_duration, TIMING.renew_deadline, TIMING.retry_period) == (15.0, 10.0, 2.0)
    with pytest.raises(ValueError, match="greater than renew_deadline"):
        LeaseTiming(lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry_period"):
        LeaseTiming(renew_deadline=2.4, retry_period=2)


def test_no_lease_is_created_held() -> None:
    decision = decide("a", None, T0, TIMING)
    assert decision.action is Action.CREATE
    assert decision.record == LeaseRecord("a", 15, T0, T0, 0)


def test_another_holders_lease_is_respected_until_lease_duration_after_it_was_seen_to_change() -> None:
    observation = seen(held("b"), seconds_ago=14.9)
    assert decide("a", observation, T0, TIMING).action is Action.WAIT
    expired = seen(held("b"), seconds_ago=15.0)
    decision = decide("a", expired, T0, TIMING)
    assert decision.action is Action.UPDATE
    assert decision.record == LeaseRecord("a", 15, T0, T0, 4)  # a new term: one more transition


def test_expiry_reads_this_processs_clock_not_the_renew_time_written_by_the_holder() -> None:
    # The holder's clock runs an hour behind: its renewTime looks stale, but the record changed 1 s ago here.
    skewed = seen(held("b", renewed_seconds_ago=3600), seconds_ago=1)
    assert decide("a", skewed, T0, TIMING).action is Action.WAIT


def test_a_released_lease_is_taken_at_once() -> None:
    record = released(held("b"), T0)
    assert record.holder == ""
    assert decide("a", seen(record, seconds_ago=0), T0, TIMING).action is Action.UPDATE


def test_a_restarted_process_on_the_same_host_gets_an_identity_of_its_own_and_waits_for_its_predecessors_lease() -> (
    None
):
    # In a container both processes are PID 1 on the Pod's host name: host_pid would be the same identity twice.
    predecessor, restarted = (
        process_identity("access-hygiene-7d9f-abcde"),
        process_identity("access-hygiene-7d9f-abcde"),
    )
    assert predecessor != restarted
    assert predecessor.startswith("access-hygiene-7d9f-abcde_")
    # Killed just after renewing: the restarted process waits out the term like any other candidate.
    assert decide(restarted, seen(held(predecessor), seconds_ago=1), T0, TIMING).action is Action.WAIT


def test_a_renewal_keeps_the_terms_start_and_transitions() -> None:
    mine = held("a", renewed_seconds_ago=2)
    decision = decide("a", seen(mine, seconds_ago=2), T0, TIMING)
    assert decision.record == LeaseRecord("a", 15, mine.acquire_time, T0, 3)


def test_observation_time_moves_only_when_the_record_changes() -> None:
    first = observe(None, held("b"), "1", T0)
    later = T0 + timedelta(seconds=5)
    assert observe(first, held("b"), "2", later) == Observation(held("b"), "2", T0)
    changed = held("b", renewed_seconds_ago=-5)
    assert observe(first, changed, "3", later).observed_at == later
    assert not held_by_other("a", Observation(held("b"), "1", T0), T0 + timedelta(seconds=15))


def test_the_fence_falls_lease_duration_minus_renew_deadline_before_anyone_may_take_over() -> None:
    assert fence(T0, TIMING) == T0 + timedelta(seconds=10)
    # The earliest takeover: another candidate saw the renewal no earlier than it started.
    assert fence(T0, TIMING) + timedelta(seconds=5) == T0 + timedelta(seconds=TIMING.lease_duration)


def test_a_standby_waits_the_retry_period_or_until_the_term_runs_out_if_sooner() -> None:
    assert standby_wait("a", None, T0, 2.0) == 2.0
    assert standby_wait("a", seen(held("b"), seconds_ago=1), T0, 2.0) == 2.0
    assert standby_wait("a", seen(held("b"), seconds_ago=14.5), T0, 2.0) == 0.5
    assert standby_wait("a", seen(held("a"), seconds_ago=14.5), T0, 2.0) == 2.0


# The gate ---------------------------------------------------------------------------------------------------


def test_the_gate_opens_until_the_fence_by_the_clock_at_each_write() -> None:
    clock = pinned_clock()
    gate = WriteGate(clock)
    assert not gate.is_open()
    gate.open_until(fence(clock.now(), TIMING))
    assert gate.is_open()
    clock.advance(9.9)
    with gate.writing("PATCH x"):
        pass
    clock.advance(0.1)  # paused past the fence: no write until the Lease is renewed
    with pytest.raises(NotLeaderError, match="PATCH x"), gate.writing("PATCH x"):
        pass
    assert WriteGate(clock, elected=False).is_open()


def test_reads_and_reviews_pass_a_closed_gate_and_writes_do_not() -> None:
    assert is_write("PATCH", "https://h/api/v1/namespaces/a?fieldManager=x")
    assert is_write("DELETE", "https://h/apis/rbac.authorization.k8s.io/v1/clusterroles/x")
    assert is_write("POST", "https://h/api/v1/namespaces/a/events")
    assert not is_write("GET", "https://h/api/v1/namespaces?watch=true")
    assert not is_write("POST", "https://h/apis/authentication.k8s.io/v1/selfsubjectreviews")
    assert not is_write("POST", "https://h/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.reason = "fake"
        self.headers: dict[str, str] = {}
        self.data = json.dumps(body).encode()
        self.response = self

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return {}

    def release_conn(self) -> None:
        pass


class LeaseServer:
    """One Lease collection with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.calls: list[tuple[str, str]] = []

    def handle(self, method: str, url: str, body: Any) -> FakeResponse:
        path = url.split("?", 1)[0]
        self.calls.append((method, path))
        sent = json.loads(body) if isinstance(body, (str, bytes)) else body
        if method == "GET":
            return FakeResponse(200, self.lease) if self.lease else FakeResponse(404, {"code": 404})
        if (method == "POST" and self.lease is not None) or (method == "PUT" and self.lease is None):
            return FakeResponse(409 if method == "POST" else 404, {})
        if method == "PUT" and sent["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return FakeResponse(409, {"code": 409})
        self.version += 1
        self.lease = {**sent, "metadata": {**sent["metadata"], "resourceVersion": str(self.version)}}
        return FakeResponse(200, self.lease)


class FakeApi(kubernetes.client.ApiClient):  # type: ignore[misc]
    def __init__(self, server: LeaseServer) -> None:
        super().__init__(kubernetes.client.Configuration(host="https://fake"))
        self.server = server

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None, **_: Any) -> Any:
        return self.server.handle(method, url, body)


def elector(server: LeaseServer, identity: str, clock: Any, gate: WriteGate, log: list[str]) -> LeaderElector:
    return LeaderElector(
        FakeApi(server),
        gate,
        "ops",
        "access-hygiene",
        identity,
        TIMING,
        on_started_leading=lambda: log.append(f"{identity} leads"),
        on_stopped_leading=lambda: log.append(f"{identity} stops"),
        clock=clock,
    )


def test_two_electors_one_leader_expiry_takeover_and_the_old_leader_fenced_and_refused() -> None:
    server, clock, log = LeaseServer(), pinned_clock(), []
    gate_a, gate_b = WriteGate(clock), WriteGate(clock)
    a, b = elector(server, "a", clock, gate_a, log), elector(server, "b", clock, gate_b, log)
    assert a._try_acquire_or_renew()
    assert gate_a.is_open()
    assert not b._try_acquire_or_renew()
    assert not gate_b.is_open()
    assert server.lease is not None
    assert record_of(server.lease).holder == "a"
    clock.advance(2)
    assert a._try_acquire_or_renew()  # renewal: the fence moves
    b._read()  # b sees the renewal change the record
    clock.advance(12)  # a is paused: its fence (renewal + 10 s) passes, b's view of the term has 3 s left
    assert not gate_a.is_open()
    assert not b._try_acquire_or_renew()
    clock.advance(3)
    assert b._try_acquire_or_renew()
    assert gate_b.is_open()
    assert record_of(server.lease).transitions == 1
    # a resumes: its renewal carries the old resourceVersion and is refused; it re-reads and waits.
    assert not a._try_acquire_or_renew()
    assert not gate_a.is_open()


def test_release_hands_over_on_the_next_attempt() -> None:
    server, clock, log = LeaseServer(), pinned_clock(), []
    gate_a, gate_b = WriteGate(clock), WriteGate(clock)
    a, b = elector(server, "a", clock, gate_a, log), elector(server, "b", clock, gate_b, log)
    a._transition(a._try_acquire_or_renew())
    assert not b._try_acquire_or_renew()
    gate_a.close()
    assert a.release()
    b._read()
    assert b._try_acquire_or_renew()  # no waiting out the term
    assert log == ["a leads"]


def test_a_gated_client_refuses_a_write_without_sending_it_and_lets_reads_through() -> None:
    clock = pinned_clock()
    gate = WriteGate(clock)
    api = GatedApiClient(kubernetes.client.Configuration(host="https://fake"), gate)
    sent: list[str] = []

    class Transport:
        def request(self, method: str, url: str, **_: Any) -> FakeResponse:
            sent.append(method)
            return FakeResponse(200, {})

    api.rest_client = Transport()
    url = "https://fake/apis/coordination.k8s.io/v1/namespaces/ops/leases"
    with pytest.raises(NotLeaderError):
        api.call_api("POST", url, body={})
    api.call_api("GET", url)
    assert sent == ["GET"]
    gate.open_until(fence(clock.now(), TIMING))
    api.call_api("POST", url, body={})
    assert sent == ["GET", "POST"]


def test_a_gate_closed_for_shutdown_stays_closed_when_a_late_renewal_lands() -> None:
    clock = pinned_clock()
    gate = WriteGate(clock)
    gate.open_until(fence(clock.now(), TIMING))
    gate.close(final=True)
    gate.open_until(fence(clock.now(), TIMING))  # a renewal thread that outlived the cancelled election task
    assert not gate.is_open()


def attempt(candidate: LeaderElector) -> bool:
    """One turn of the election loop without its waits: attempt, transition, announce."""
    leads = candidate._try_acquire_or_renew()
    candidate._transition(leads)
    candidate._announce_standby(leads)
    return leads


def test_a_standby_counts_the_term_from_its_first_sight_of_the_record_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, clock, log = LeaseServer(), pinned_clock(), []
    a, b = elector(server, "a", clock, WriteGate(clock), log), elector(server, "b", clock, WriteGate(clock), log)
    assert attempt(a)  # a's last renewal
    clock.advance(1.5)  # b starts (and first reads the Lease) 1.5 s after it: a is lost in between
    caplog.set_level(logging.INFO, logger="access_hygiene.k8s.leader")
    assert not attempt(b)
    assert not attempt(b)
    standing_by = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Standing by")]
    assert standing_by == ["Standing by: Lease ops/access-hygiene held by a; taking it if not renewed within 15 s."]
    clock.advance(14.9)  # 16.4 s after a's renewal, but b has counted 14.9 s of the term
    assert not attempt(b)
    clock.advance(0.1)
    assert attempt(b)
    assert log == ["a leads", "b leads"]
    assert len([r for r in caplog.records if r.getMessage().startswith("Standing by")]) == 1


def test_a_handover_stops_exporting_as_the_leader_before_it_releases_the_lease() -> None:
    """A rolling upgrade scrapes the old leader and its successor side by side: the old one must not export its
    findings as the leader once the successor can take the Lease."""
    import asyncio

    from access_hygiene.handlers.lifecycle import hand_over
    from access_hygiene.metrics import Metrics

    metrics = Metrics()
    metrics.set_leading(True)
    gate = WriteGate(pinned_clock())
    gate.open_until(PINNED_NOW + timedelta(seconds=5))
    seen_at_release: list[bool] = []

    class Elector:
        async def stop(self) -> None:
            pass

        def release(self) -> bool:
            seen_at_release.append(metrics.state.leading)
            return True

    try:
        asyncio.run(hand_over(Elector(), gate, metrics))  # type: ignore[arg-type]
    finally:
        metrics.shutdown()
    assert seen_at_release == [False]
    assert not gate.is_open()
