"""Usage counters across a leader change (docs/ha.md): the snapshot and batch wire forms, the leader's mirror hub,
and a leader and a standby over real TLS on loopback: the standby's counters are the leader's after every batch
the leader answered, a batch relayed through the standby is counted once, and a takeover starts from them."""

import http.client
import json
import math
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from access_hygiene.engine.usage.auditlog import AuditRequest, parse_event
from access_hygiene.engine.usage.counters import ObservedSubject, UsageCounters, record_all
from access_hygiene.engine.usage.replica import (
    batch_from_wire,
    batch_to_wire,
    comparable,
    restore_snapshot,
    snapshot_to_wire,
)
from access_hygiene.k8s.usage_mirror import MirrorHub, SubscriptionClosedError
from tests.unit.audit_events import SA, event

pytestmark = pytest.mark.unit

OTHER = "system:serviceaccount:shop:billing"


def request(verb: str, resource: str = "configmaps", **fields: Any) -> AuditRequest:
    parsed = parse_event(event(verb, resource, **fields))
    assert isinstance(parsed, AuditRequest), parsed
    return parsed


def mixed_requests() -> list[AuditRequest]:
    return [
        request("get", name="settings"),
        request("get", name="other"),
        request("list"),
        request("watch"),
        request("get", "secrets", allowed=False),
        request("create", "pods", subresource="exec", name="p-1", user=OTHER),
        request("get", "", uri="/healthz", user=OTHER),
    ]


def test_a_snapshot_restores_the_same_counters_with_their_ages_on_the_followers_clock() -> None:
    counters = UsageCounters(name_cap=2)
    record_all(counters, mixed_requests()[:3], now=1000.0)
    record_all(counters, [*mixed_requests()[3:], request("get", name="third")], now=1010.0)  # names overflow
    wire = json.loads(json.dumps(snapshot_to_wire(counters, now=1100.0)))  # as it travels

    follower = UsageCounters(name_cap=2)
    record_all(follower, [request("delete", user=OTHER)], now=5.0)  # replaced, not merged
    before = follower.subjects[OTHER].version
    restore_snapshot(follower, wire, now=2100.0)  # another clock: 1,000 s ahead

    assert comparable(snapshot_to_wire(follower, 2100.0)) == comparable(wire)
    assert follower.subjects[SA].first_seen == 2000.0  # observed for 100 s, as on the leader
    assert follower.subjects[SA].last_seen == 2010.0
    assert follower.subjects[SA].usage().allowed[("get", "", "configmaps", "", "shop", "")].overflow
    assert follower.subjects[OTHER].version > before  # a judgement cached here is not reused
    assert ("delete", "", "configmaps", "", "shop", "") not in follower.subjects[OTHER].seen
    assert follower.recorded == counters.recorded


def test_empty_counters_and_a_subject_never_seen_travel_too() -> None:
    restored = UsageCounters()
    record_all(restored, [request("get")], now=1.0)
    restore_snapshot(restored, json.loads(json.dumps(snapshot_to_wire(UsageCounters(), now=1.0))), now=2.0)
    assert restored.subjects == {}
    counters = UsageCounters(subjects={"x": ObservedSubject()})
    restore_snapshot(restored, json.loads(json.dumps(snapshot_to_wire(counters, 1.0))), now=2.0)
    assert (restored.subjects["x"].first_seen, restored.subjects["x"].last_seen) == (math.inf, -math.inf)


def test_a_batch_travels_unchanged() -> None:
    requests = mixed_requests()
    sequence, back = batch_from_wire(json.loads(json.dumps(batch_to_wire(7, requests))))
    assert (sequence, back) == (7, requests)
    with pytest.raises(ValueError, match="fields"):
        batch_from_wire({"seq": 1, "requests": [["too", "short"]]})


def test_a_follower_that_does_not_acknowledge_is_dropped_and_the_others_are_waited_for() -> None:
    hub = MirrorHub()
    assert hub.publish([request("get")]) == []  # nobody follows: nothing to wait for
    quick, silent = hub.subscribe("quick"), hub.subscribe("silent")
    pending = hub.publish([request("get")])
    assert sorted(sequence for _, sequence in pending) == [1, 1]
    frame = quick.next_frame(0.1)
    assert frame is not None
    assert json.loads(frame[1])["seq"] == 1
    quick.ack(1)
    assert hub.wait(pending, timeout=0.2) == 1
    assert hub.followers == 1
    with pytest.raises(SubscriptionClosedError):
        silent.next_frame(0.1)
    assert quick.next_frame(0.05) is None  # nothing more: a heartbeat is due


# --- a leader and a standby over TLS on loopback ----------------------------------------------------------------


def event_list(requests: list[dict[str, Any]]) -> bytes:
    return json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": requests}).encode()


def post(port: int, ca_cert: Path, body: bytes) -> int:
    context = ssl.create_default_context(cafile=str(ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", "/audit", body, {"Authorization": "Bearer t0ken"})
        return connection.getresponse().status
    finally:
        connection.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def snapshot(monitor: Any) -> dict[str, Any]:
    with monitor._lock:
        return comparable(snapshot_to_wire(monitor.counters, time.time()))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Any, Any, Path]]:
    from prometheus_client import CollectorRegistry

    from access_hygiene.k8s.leader import WriteGate
    from access_hygiene.k8s.usage_monitor import UsageMonitor
    from access_hygiene.k8s.watch_cache import ClusterState, WatchSpec
    from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs
    from access_hygiene.metrics import UsageMetrics
    from access_hygiene.settings import OperatorSettings

    ca = make_certs(tmp_path / "pki")
    certs = make_audit_webhook_certs(tmp_path / "webhook", ca)
    (tmp_path / "token").write_text("t0ken")
    monitors = []
    for name in ("leader", "standby"):
        settings = OperatorSettings(
            audit_webhook_enabled=True, audit_webhook_addr="127.0.0.1", audit_webhook_port=0,
            audit_webhook_cert_file=str(certs.serving_cert), audit_webhook_key_file=str(certs.serving_key),
            audit_webhook_token_file=str(tmp_path / "token"), leader_election_identity=name,
        )  # fmt: skip
        state = ClusterState([WatchSpec("v1", "ServiceAccount")])
        gate = WriteGate(elected=True)
        monitor = UsageMonitor(None, state, settings, UsageMetrics(CollectorRegistry()), gate=gate)
        monitor.server.start()
        assert monitor.follower is not None
        monitor.follower.start()
        monitors.append(monitor)
    leader, standby = monitors
    leader.gate.open_until(datetime.now(UTC) + timedelta(hours=1))
    url = f"https://127.0.0.1:{leader.server.port}/audit"
    standby.leader_url = lambda: url if leader.gate.is_open() else None
    try:
        yield leader, standby, ca.ca_cert
    finally:
        for monitor in monitors:
            monitor.follower.stop()
            monitor.hub.close_all()
            monitor.server.stop()


def test_the_standby_holds_the_leaders_counters_counts_relayed_batches_once_and_keeps_them_at_takeover(
    pair: tuple[Any, Any, Path],
) -> None:
    leader, standby, ca_cert = pair
    before_it_follows = [event("get", "configmaps", name="settings"), event("list", "pods", user=OTHER)]
    direct = [event("get", "secrets", name="token"), event("watch", "configmaps")]
    relayed = [event("delete", "pods", name="p-1"), event("get", "configmaps", name="settings")]
    single = UsageCounters()  # what one replica that received everything counts

    assert post(leader.server.port, ca_cert, event_list(before_it_follows)) == 200
    wait_for(lambda: standby.following)  # the snapshot carried the batch that came before
    assert snapshot(standby) == snapshot(leader)

    assert post(leader.server.port, ca_cert, event_list(direct)) == 200
    assert snapshot(standby) == snapshot(leader)  # answered only once the standby acknowledged it

    assert post(standby.server.port, ca_cert, event_list(relayed)) == 200
    assert snapshot(standby) == snapshot(leader)  # counted once: mirrored back, not counted again on relay

    for batch in (before_it_follows, direct, relayed):
        record_all(single, [r for r in map(parse_event, batch) if isinstance(r, AuditRequest)], now=time.time())
    expected = comparable(snapshot_to_wire(single, time.time()))
    assert snapshot(leader) == expected
    assert expected["subjects"][SA]["requests"] == 4  # a watch counts at ResponseStarted, not at its end

    # The leader is gone; the standby leads with every batch the leader had answered, windows unchanged.
    first_seen = leader.counters.subjects[SA].first_seen
    leader.server.stop()
    leader.hub.close_all()  # its connections end with it
    leader.gate.close()
    standby.gate.open_until(datetime.now(UTC) + timedelta(hours=1))
    wait_for(lambda: not standby.following)
    assert snapshot(standby) == expected
    assert abs(standby.counters.subjects[SA].first_seen - first_seen) < 1.0
