"""Continuous mode, pure parts: bounded usage counters, observation windows, status.unusedRules and its patch,
the audit webhook's batch parser and token check, and the settings that switch it on."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from access_hygiene.engine.planning.policy_status import status_to_wire
from access_hygiene.engine.rbac.permissions import PermissionIndex
from access_hygiene.engine.usage.auditlog import AuditRequest, parse_event
from access_hygiene.engine.usage.counters import UsageCounters, parse_service_account_user, record_all
from access_hygiene.engine.usage.judgement import (
    policy_service_account,
    rbac_snapshot,
    unused_permission_count,
    unused_rules,
    unused_rules_patch,
)
from access_hygiene.engine.usage.unused import unused_grants
from access_hygiene.k8s.audit_webhook import TokenFile, parse_batch
from access_hygiene.models.findings import Subject
from access_hygiene.models.status import AccessPolicyStatus, UnusedRule
from access_hygiene.settings import OperatorSettings
from tests.unit.audit_events import SA, event
from tests.unit.test_usage_unused import binding, cluster_role

pytestmark = pytest.mark.unit

READER = Subject(kind="ServiceAccount", namespace="shop", name="orders-api")


def request(verb: str, resource: str = "configmaps", **fields: Any) -> AuditRequest:
    parsed = parse_event(event(verb, resource, **fields))
    assert isinstance(parsed, AuditRequest), parsed
    return parsed


# --- counters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        (SA, ("shop", "orders-api")),
        ("system:serviceaccount:shop:", None),
        ("system:serviceaccount::name", None),
        ("system:serviceaccount:a:b:c", None),
        ("alice", None),
        ("system:node:n1", None),
    ],
)
def test_only_service_account_users_are_parsed(username: str, expected: tuple[str, str] | None) -> None:
    assert parse_service_account_user(username) == expected


def test_counters_keep_allowed_service_account_requests_only() -> None:
    counters = UsageCounters()
    outcomes = record_all(
        counters,
        [
            request("get", name="settings"),
            request("list"),
            request("get", "secrets", allowed=False),  # denied: grants nothing
            request("get", user="alice"),  # not a ServiceAccount
        ],
        now=100.0,
    )
    assert outcomes == {"recorded": 2, "ignored": 2, "dropped": 0}
    assert list(counters.subjects) == [SA]
    usage = counters.subjects[SA].usage()
    assert sorted(key[0] for key in usage.allowed) == ["get", "list"]
    assert usage.allowed[("get", "", "configmaps", "", "shop", "")].names == {"settings"}
    assert usage.allowed[("list", "", "configmaps", "", "shop", "")].unnamed


def test_subject_cap_drops_new_subjects_and_counts_them() -> None:
    counters = UsageCounters(max_subjects=2)
    for name in ("a", "b", "c", "d"):
        counters.add(request("get", user=f"system:serviceaccount:shop:{name}"), now=1.0)
    counters.add(request("list", user="system:serviceaccount:shop:a"), now=2.0)  # a known subject still counts
    assert sorted(counters.subjects) == ["system:serviceaccount:shop:a", "system:serviceaccount:shop:b"]
    assert counters.dropped_subjects == 2
    assert len(counters.subjects["system:serviceaccount:shop:a"].seen) == 2


def test_key_cap_makes_a_subject_incomplete_and_never_judged() -> None:
    counters = UsageCounters(max_keys=3)
    for resource in ("configmaps", "pods", "services"):
        assert counters.add(request("get", resource), now=0.0) == "recorded"
    assert counters.add(request("get", "configmaps", name="x"), now=1.0) == "recorded"  # a known key: kept
    assert counters.add(request("get", "secrets"), now=1.0) == "dropped"
    assert counters.dropped_keys == 1
    assert len(counters.subjects[SA].seen) == 3
    # A dropped record may be exactly the use of a grant: the subject is not judged, however long observed.
    assert counters.state(SA, now=10**9, min_window_seconds=0) == "incomplete"
    assert list(counters.judged(now=10**9, min_window_seconds=0)) == []
    assert counters.state_counts(10**9, 0) == {"judged": 0, "observing": 0, "incomplete": 1}


def test_window_is_judged_from_the_receivers_first_sighting() -> None:
    counters = UsageCounters()
    # The event claims 2026-11-20, but the receiver saw it at t=1000: the window starts then.
    counters.add(request("get"), now=1000.0)
    counters.add(request("list"), now=1500.0)
    observed = counters.subjects[SA]
    assert (observed.first_seen, observed.last_seen) == (1000.0, 1500.0)
    assert counters.state(SA, now=1000.0 + 599, min_window_seconds=600) == "observing"
    assert counters.state(SA, now=1000.0 + 600, min_window_seconds=600) == "judged"
    assert [s for s, _ in counters.judged(now=1600.0, min_window_seconds=600)] == [READER]
    assert counters.state("system:serviceaccount:shop:idle", now=10**9, min_window_seconds=0) is None


def test_object_names_are_capped_per_key() -> None:
    counters = UsageCounters(name_cap=2)
    for name in ("a", "b", "c"):
        counters.add(request("get", name=name), now=1.0)
    record = counters.subjects[SA].usage().allowed[("get", "", "configmaps", "", "shop", "")]
    assert record.overflow
    assert record.names == set()


def test_forget_drops_gone_service_accounts_after_a_grace_period() -> None:
    counters = UsageCounters()
    counters.add(request("get", user="system:serviceaccount:shop:gone"), now=0.0)
    counters.add(request("get", user="system:serviceaccount:shop:new"), now=95.0)
    counters.add(request("get", user="system:serviceaccount:shop:kept"), now=0.0)
    exists = {("shop", "kept")}
    assert counters.forget(lambda ns, name: (ns, name) in exists, now=100.0, grace_seconds=60.0) == 1
    # "new" is not in the cluster yet either, but sent requests within the grace period.
    assert sorted(counters.subjects) == ["system:serviceaccount:shop:kept", "system:serviceaccount:shop:new"]


# --- unused rules --------------------------------------------------------------------------------------------

EDITISH = cluster_role(
    "editish",
    [
        {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["only-this"], "verbs": ["update"]},
    ],
)
ROLE_BINDINGS = [
    binding("RoleBinding", "orders-editish", "editish", "orders-api"),
    binding("RoleBinding", "someone-else", "editish", "other"),
]


def judged_unused(*requests: AuditRequest) -> list[UnusedRule]:
    counters = UsageCounters()
    record_all(counters, requests, now=0.0)
    [(subject, usage)] = list(counters.judged(now=10.0, min_window_seconds=5))
    index = PermissionIndex.build(rbac_snapshot([subject], [], [EDITISH], ROLE_BINDINGS, []))
    return unused_rules(unused_grants(index, subject, usage))


def test_unused_rules_group_resources_with_equal_verbs_and_name_the_binding() -> None:
    rules = judged_unused(request("get", name="settings"), request("list"))
    wire = [rule.model_dump(by_alias=True, mode="json", exclude_defaults=True) for rule in rules]
    binding_ref = {"kind": "RoleBinding", "name": "orders-editish", "namespace": "shop"}
    role_ref = {"kind": "ClusterRole", "name": "editish"}
    assert wire == [
        {"verbs": ["delete"], "resources": ["configmaps"], "binding": binding_ref, "role": role_ref},
        {"verbs": ["get", "list", "delete"], "resources": ["secrets"], "binding": binding_ref, "role": role_ref},
        {"verbs": ["update"], "resources": ["configmaps"], "resourceNames": ["only-this"], "binding": binding_ref,
         "role": role_ref},
        {"verbs": ["get", "list", "delete"], "apiGroup": "apps", "resources": ["deployments"], "binding": binding_ref,
         "role": role_ref},
    ]  # fmt: skip


def test_rbac_snapshot_keeps_only_bindings_of_the_judged_subjects() -> None:
    group_binding = binding("ClusterRoleBinding", "all-sas", "editish", "x")
    group_binding["subjects"] = [{"kind": "Group", "name": "system:serviceaccounts:shop"}]
    snapshot = rbac_snapshot([READER], [], [EDITISH], ROLE_BINDINGS, [group_binding])
    assert [b["metadata"]["name"] for b in snapshot.role_bindings] == ["orders-editish"]
    assert [b["metadata"]["name"] for b in snapshot.cluster_role_bindings] == ["all-sas"]


def test_unused_rules_are_bounded_and_counted_in_full() -> None:
    counters = UsageCounters()
    counters.add(request("get", name="settings"), now=0.0)
    [(subject, usage)] = list(counters.judged(now=10.0, min_window_seconds=0))
    index = PermissionIndex.build(rbac_snapshot([subject], [], [EDITISH], ROLE_BINDINGS, []))
    grants = unused_grants(index, subject, usage)
    assert len(unused_rules(grants, limit=2)) == 2
    # configmaps list,delete + update(only-this) + secrets 3 + deployments 3 = 9 unused (verb, resource) pairs
    assert unused_permission_count(grants) == 9


def test_everything_used_gives_an_empty_list() -> None:
    used = [request(v, r) for r in ("configmaps", "secrets") for v in ("get", "list", "delete")]
    used += [request(v, "deployments", group="apps") for v in ("get", "list", "delete")]
    used.append(request("update", name="only-this"))
    assert judged_unused(*used) == []


def test_the_status_patch_is_written_only_on_change() -> None:
    rules = judged_unused(request("get"))
    patch = unused_rules_patch({"conditions": []}, rules)
    assert patch is not None
    current = {"conditions": [], **patch["status"]}
    assert unused_rules_patch(current, rules) is None  # no-op: no write
    assert unused_rules_patch(current, None) == {"status": {"unusedRules": None}}  # removed (merge patch null)
    assert unused_rules_patch({}, None) is None
    assert unused_rules_patch({}, []) == {"status": {"unusedRules": []}}


def test_the_policy_sync_status_never_carries_unused_rules() -> None:
    """The policy sync writes its status with a merge patch; an absent key keeps what continuous mode wrote."""
    assert "unusedRules" not in status_to_wire(AccessPolicyStatus(mode="audit"))
    assert status_to_wire(AccessPolicyStatus(unused_rules=[]))["unusedRules"] == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"metadata": {"name": "app", "namespace": "shop"}, "spec": {}}, "app"),
        ({"metadata": {"name": "app", "namespace": "shop"}, "spec": {"serviceAccount": {"name": "sa"}}}, "sa"),
        ({"metadata": {"name": "app", "namespace": "shop"}, "spec": {"mode": "nonsense"}}, None),
        ({"metadata": {"name": "app", "namespace": "shop", "deletionTimestamp": "x"}, "spec": {}}, None),
    ],
)
def test_policy_service_account(policy: dict[str, Any], expected: str | None) -> None:
    assert policy_service_account(policy) == expected


# --- webhook input -------------------------------------------------------------------------------------------


def event_list(*items: Any, api_version: str = "audit.k8s.io/v1") -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": "EventList", "items": list(items)}).encode()


def test_batches_parse_every_event_and_count_the_rest() -> None:
    items = [
        {k: v for k, v in event("get", "configmaps").items() if k not in ("apiVersion", "kind")},  # as the webhook
        event("list", "pods"),
        event("get", stage="RequestReceived"),  # normal: ignored
        {"stage": "ResponseComplete"},  # no verb: invalid
        "not an event",
    ]
    batch = parse_batch(event_list(*items))
    assert not batch.error
    assert [(r.verb, r.resource) for r in batch.requests] == [("get", "configmaps"), ("list", "pods")]
    assert (batch.ignored, batch.invalid) == (1, 2)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"apiVersion": "audit.k8s.io/v1", "items": [', "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[" * 100000, "malformed JSON"),
        (b"[]", "not an audit EventList"),
        (event_list(api_version="audit.k8s.io/v1beta1"), "only audit.k8s.io/v1"),
        (b'{"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": 3}', "expected an EventList"),
        (b'{"apiVersion": "audit.k8s.io/v1", "kind": "Policy"}', "expected an EventList"),
    ],
)
def test_unusable_bodies_are_refused_with_a_reason(body: bytes, error: str) -> None:
    assert error in parse_batch(body).error


def test_a_single_event_body_is_accepted() -> None:
    assert len(parse_batch(json.dumps(event("get", "configmaps")).encode()).requests) == 1


def test_token_file_is_compared_exactly_and_reread_on_change(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    token = TokenFile(str(path))
    assert token.matches("Bearer s3cret")
    assert not token.matches("Bearer s3cre")
    assert not token.matches("Bearer s3cret-and-more")
    assert not token.matches("Basic s3cret")
    assert not token.matches(None)
    path.write_text("rotated-token-value")
    assert token.matches("Bearer rotated-token-value")
    path.write_text("")
    assert not token.matches("Bearer ")  # an empty token file refuses everyone
    path.unlink()
    assert not token.matches("Bearer rotated-token-value")


def test_enabling_the_webhook_requires_tls_and_authentication() -> None:
    with pytest.raises(ValidationError, match="cert_file"):
        OperatorSettings(audit_webhook_enabled=True, audit_webhook_token_file="/t")
    with pytest.raises(ValidationError, match="authentication"):
        OperatorSettings(audit_webhook_enabled=True, audit_webhook_cert_file="/c", audit_webhook_key_file="/k")
    settings = OperatorSettings(
        audit_webhook_enabled=True, audit_webhook_cert_file="/c", audit_webhook_key_file="/k",
        audit_webhook_client_ca_file="/ca",
    )  # fmt: skip
    assert settings.usage_min_window_seconds == 7 * 86400
    assert not OperatorSettings().audit_webhook_enabled


# --- the receiver over real TLS (loopback, no cluster) ---------------------------------------------------------


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from access_hygiene.k8s.audit_webhook import AuditWebhookServer, server_context
    from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs

    directory = tmp_path_factory.mktemp("webhook")
    ca = make_certs(directory / "pki")
    certs = make_audit_webhook_certs(directory / "webhook", ca)
    (directory / "token").write_text("t0ken")
    received: list[AuditRequest] = []
    codes: list[str] = []

    def sink(requests: list[AuditRequest]) -> dict[str, int]:
        received.extend(requests)
        return {"recorded": len(requests)}

    server = AuditWebhookServer(
        "127.0.0.1", 0, server_context(str(certs.serving_cert), str(certs.serving_key)), str(directory / "token"),
        sink, codes.append, lambda result, count: None, max_body_bytes=4096,
    )  # fmt: skip
    server.start()
    yield server, ca.ca_cert, received, codes
    server.stop()


def call(receiver: Any, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    import http.client
    import ssl

    server, ca_cert, _, _ = receiver
    context = ssl.create_default_context(cafile=str(ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        connection.request(method, path, body, headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_receiver_answers_every_kind_of_request(receiver: Any) -> None:
    auth = {"Authorization": "Bearer t0ken"}
    good = event_list(event("get", "configmaps"), event("list", "pods"))
    assert call(receiver, "POST", "/audit", good, auth) == 200
    assert call(receiver, "POST", "/audit", good, {"Authorization": "Bearer wrong"}) == 401
    assert call(receiver, "POST", "/audit", good, {}) == 401
    assert call(receiver, "POST", "/elsewhere", good, auth) == 404
    assert call(receiver, "GET", "/audit", None, auth) == 405
    assert call(receiver, "POST", "/audit", b"x" * 5000, auth) == 413  # over max_body_bytes: not read
    assert call(receiver, "POST", "/audit", b"{not json", auth) == 400
    assert call(receiver, "POST", "/audit", good, auth) == 200  # still serving
    _, _, received, codes = receiver
    assert [(r.verb, r.resource) for r in received] == [("get", "configmaps"), ("list", "pods")] * 2
    assert codes == ["200", "401", "401", "404", "405", "413", "400", "200"]


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_names_are_kept_exactly_up_to_the_cap(cap: int) -> None:
    counters = UsageCounters(name_cap=cap)
    seen: list[str] = []
    for name in ("a", "a", "b", "c", "b"):
        counters.add(request("get", name=name), now=1.0)
        seen.append(name)
        record = counters.subjects[SA].usage().allowed[("get", "", "configmaps", "", "shop", "")]
        distinct = set(seen)
        if len(distinct) <= cap:
            assert (record.names, record.overflow) == (distinct, False)
        else:
            assert (record.names, record.overflow) == (set(), True)


def test_version_moves_only_when_a_judgement_could_change() -> None:
    counters = UsageCounters(max_keys=2)
    counters.add(request("get", name="a"), now=1.0)
    first = counters.subjects[SA].version
    counters.add(request("get", name="a"), now=2.0)  # the same request again: nothing to re-judge
    assert counters.subjects[SA].version == first
    counters.add(request("get", name="b"), now=3.0)  # a new name (grants restricted by resourceNames)
    counters.add(request("list"), now=3.0)  # a new record (+1), without a name (+1)
    counters.add(request("watch"), now=3.0)  # dropped: the subject becomes incomplete
    assert counters.subjects[SA].version == first + 4


def monitor_over(tmp_path: Path, role_bindings: list[dict[str, Any]], policies: list[dict[str, Any]]) -> Any:
    """A UsageMonitor (not started: no server, no API) over a ClusterState holding `editish` and these objects."""
    from prometheus_client import CollectorRegistry

    from access_hygiene.k8s.usage_monitor import UsageMonitor
    from access_hygiene.k8s.watch_cache import ClusterState, WatchSpec
    from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs
    from access_hygiene.metrics import UsageMetrics

    kinds = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount", "AccessPolicy")
    state = ClusterState([WatchSpec("v1", kind) for kind in kinds])
    state.replace("ClusterRole", [EDITISH])
    state.replace("RoleBinding", role_bindings)
    state.replace("AccessPolicy", policies)
    certs = make_audit_webhook_certs(tmp_path / "webhook", make_certs(tmp_path / "pki"))
    settings = OperatorSettings(
        audit_webhook_enabled=True, audit_webhook_cert_file=str(certs.serving_cert),
        audit_webhook_key_file=str(certs.serving_key), audit_webhook_token_file=str(tmp_path / "token"),
        usage_min_window_seconds=5,
    )  # fmt: skip
    return UsageMonitor(None, state, settings, UsageMetrics(CollectorRegistry()))


def access_policy(name: str) -> dict[str, Any]:
    return {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "shop"}, "spec": {}}  # fmt: skip


def test_judgements_are_reused_until_usage_or_grants_change(tmp_path: Path) -> None:
    monitor = monitor_over(tmp_path, ROLE_BINDINGS, [access_policy("orders-api")])
    monitor.record([request("get", name="settings"), request("list")])
    assert monitor.judge(now=monitor.counters.subjects[SA].first_seen + 1).subjects == {}  # still observing
    later = monitor.counters.subjects[SA].first_seen + 10
    first = monitor.judge(now=later).subjects[("shop", "orders-api")]
    assert first.unused_count == 8  # the 9 of the test above, less configmaps list
    assert first.rules is not None
    assert monitor.judge(now=later).subjects[("shop", "orders-api")] is first  # unchanged: reused
    monitor.record([request("delete")])
    second = monitor.judge(now=later).subjects[("shop", "orders-api")]
    assert second.unused_count == first.unused_count - 1
    narrower = {**EDITISH, "rules": EDITISH["rules"][:1]}
    monitor.state.upsert("ClusterRole", narrower)
    third = monitor.judge(now=later).subjects[("shop", "orders-api")]
    assert third.unused_count == 3  # only configmaps+secrets x get,list,delete are left; configmaps all used


def test_a_burst_of_judgements_is_spread_over_passes(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    monitor = monitor_over(tmp_path, [binding("RoleBinding", f"{n}-editish", "editish", n) for n in names],
                           [access_policy(n) for n in names])  # fmt: skip
    monitor.judge_budget_seconds = 0.0  # at least one fresh judgement per pass, no more
    monitor.record([request("get", user=f"system:serviceaccount:shop:{n}") for n in names])
    now = max(s.first_seen for s in monitor.counters.subjects.values()) + 10
    progress = []
    for _ in range(4):
        result = monitor.judge(now=now)
        progress.append((sorted(name for _, name in result.subjects), sorted(name for _, name in result.pending)))
    assert progress == [(["a"], ["b", "c"]), (["a", "b"], ["c"]), (["a", "b", "c"], []), (["a", "b", "c"], [])]


def test_a_missing_certificate_or_a_taken_port_fails_at_start(tmp_path: Path) -> None:
    import socket

    from prometheus_client import CollectorRegistry

    from access_hygiene.k8s.usage_monitor import UsageMonitor
    from access_hygiene.k8s.watch_cache import ClusterState
    from access_hygiene.metrics import UsageMetrics

    missing = OperatorSettings(
        audit_webhook_enabled=True, audit_webhook_cert_file=str(tmp_path / "nope.crt"),
        audit_webhook_key_file=str(tmp_path / "nope.key"), audit_webhook_token_file=str(tmp_path / "token"),
    )  # fmt: skip
    with pytest.raises(OSError, match="No such file"):
        UsageMonitor(None, ClusterState([]), missing, UsageMetrics(CollectorRegistry()))
    monitor = monitor_over(tmp_path, [], [])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = monitor.settings.model_copy(update={"audit_webhook_addr": "127.0.0.1", "audit_webhook_port": port})
        busy = UsageMonitor(None, ClusterState([]), settings, UsageMetrics(CollectorRegistry()))
        with pytest.raises(OSError, match="in use"):
            busy.server.start()


def test_an_unreadable_token_file_is_logged_once_not_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    token = TokenFile(str(path))
    for _ in range(5):
        assert not token.matches("Bearer x")
    path.write_text("x")
    assert token.matches("Bearer x")
    path.unlink()
    assert not token.matches("Bearer x")
    assert not token.matches("Bearer x")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"Audit webhook token file {path} is unreadable"
    ] * 2


# --- a standby relays to the leader (docs/ha.md) ---------------------------------------------------------------


def test_a_standby_relays_batches_to_the_pinned_leader_and_asks_for_a_retry_without_one(tmp_path: Path) -> None:
    import http.client
    import ssl

    from access_hygiene.k8s.audit_webhook import AuditWebhookServer, LeaderRelay, server_context
    from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs

    ca = make_certs(tmp_path / "pki")
    certs = make_audit_webhook_certs(tmp_path / "webhook", ca)
    impostor = make_audit_webhook_certs(tmp_path / "impostor", make_certs(tmp_path / "other-pki"))
    (tmp_path / "token").write_text("t0ken")
    counted: dict[str, list[AuditRequest]] = {"leader": [], "standby": [], "impostor": []}
    leading = {"leader": True, "standby": False, "impostor": True}
    servers: dict[str, AuditWebhookServer] = {}
    leader_url: dict[str, str | None] = {"url": None}

    def start(name: str, serving: Any) -> None:
        def sink(requests: list[AuditRequest]) -> dict[str, int]:
            counted[name].extend(requests)
            return {"recorded": len(requests)}

        relay = LeaderRelay(
            lambda: leading[name], lambda: leader_url["url"], str(certs.serving_cert), str(tmp_path / "token")
        )
        servers[name] = AuditWebhookServer(
            "127.0.0.1", 0, server_context(str(serving.serving_cert), str(serving.serving_key)),
            str(tmp_path / "token"), sink, lambda code: None, lambda result, count: None, 1 << 20, relay,
        )  # fmt: skip
        servers[name].start()

    start("leader", certs)
    start("standby", certs)
    start("impostor", impostor)

    def post_to_standby() -> tuple[int, str | None]:
        context = ssl.create_default_context(cafile=str(ca.ca_cert))
        connection = http.client.HTTPSConnection("127.0.0.1", servers["standby"].port, context=context, timeout=10)
        try:
            body = event_list(event("get", "configmaps"))
            connection.request("POST", "/audit", body, {"Authorization": "Bearer t0ken"})
            response = connection.getresponse()
            return response.status, response.getheader("Retry-After")
        finally:
            connection.close()

    try:
        assert post_to_standby() == (503, "2")  # no leader advertised: the API server retries
        leader_url["url"] = f"https://127.0.0.1:{servers['impostor'].port}/audit"
        assert post_to_standby() == (503, "2")  # not this release's certificate: no token leaves
        assert counted["impostor"] == []
        leader_url["url"] = f"https://127.0.0.1:{servers['leader'].port}/audit"
        assert post_to_standby() == (200, None)
        assert [(r.verb, r.resource) for r in counted["leader"]] == [("get", "configmaps")]
        assert len(counted["standby"]) == 1  # the standby counts what passed through it, for a takeover
        leading["leader"] = False  # it lost the Lease meanwhile: a relayed batch is not relayed again
        assert post_to_standby() == (503, "2")
    finally:
        for server in servers.values():
            server.stop()
