"""Audit event parsing: what is kept of an event, and every way a line can be unusable."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.usage.auditlog import AuditRequest, LineError, parse_line
from tests.unit.audit_events import SA, event

pytestmark = pytest.mark.unit


def one(line: bytes | str) -> AuditRequest:
    parsed = parse_line(line)
    assert isinstance(parsed, list), parsed
    assert len(parsed) == 1
    return parsed[0]


def error(line: bytes | str) -> LineError:
    parsed = parse_line(line)
    assert isinstance(parsed, LineError), parsed
    return parsed


def test_resource_request_keeps_what_rbac_needs() -> None:
    request = one(json.dumps(event("patch", "leases", group="coordination.k8s.io", name="orders-api")))
    assert (request.username, request.verb, request.api_group, request.resource, request.namespace, request.name) == (
        SA, "patch", "coordination.k8s.io", "leases", "shop", "orders-api",
    )  # fmt: skip
    assert request.allowed
    assert request.counted
    assert request.code == 200
    assert request.timestamp == 1795168800.0  # 2026-11-20T10:00:00Z


def test_subresource_and_cluster_scope() -> None:
    request = one(json.dumps(event("get", "pods", subresource="log", name="web-1")))
    assert (request.resource, request.subresource) == ("pods", "log")
    assert one(json.dumps(event("list", "nodes", namespace=""))).namespace == ""


def test_impersonated_user_is_the_one_authorized() -> None:
    body = event("get", "pods", user="admin")
    body["impersonatedUser"] = {"username": SA}
    assert one(json.dumps(body)).username == SA


@pytest.mark.parametrize(
    ("decision", "code", "allowed"),
    [
        (True, 404, True),  # authorized, object missing: the permission was needed
        (True, 422, True),
        (False, 404, True),
        (False, 403, False),  # no decision annotation: the response code decides
        (False, 401, False),
    ],
)
def test_decision(decision: bool, code: int, allowed: bool) -> None:
    body = event("get", "configmaps", name="x", code=code, decision=decision)
    assert one(json.dumps(body)).allowed is allowed


def test_forbid_annotation_wins() -> None:
    assert one(json.dumps(event("list", "secrets", allowed=False))).allowed is False


def test_non_resource_request_keeps_the_path_without_query() -> None:
    request = one(json.dumps(event("get", uri="/metrics?x=1")))
    assert (request.path, request.resource, request.is_resource) == ("/metrics", "", False)


def test_watch_counted_once_when_it_starts() -> None:
    started = one(json.dumps(event("watch", "pods", stage="ResponseStarted")))
    completed = one(json.dumps(event("watch", "pods", stage="ResponseComplete")))
    denied = one(json.dumps(event("watch", "secrets", stage="ResponseComplete", allowed=False)))
    assert (started.counted, completed.counted, denied.counted) == (True, False, True)


def test_other_stages_are_skipped_not_errors() -> None:
    skipped = error(json.dumps(event("get", "pods", stage="RequestReceived")))
    assert (skipped.reason, skipped.is_error) == ("stage", False)
    assert error(json.dumps(event("get", "pods", stage="ResponseStarted"))).reason == "stage"
    assert error(b"   \n").reason == "blank"


def test_event_list_yields_every_item() -> None:
    items = [event("get", "pods", name="a"), event("list", "pods", stage="RequestReceived"), event("list", "pods")]
    parsed = parse_line(json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}))
    assert isinstance(parsed, list)
    assert [r.verb for r in parsed] == ["get", "list"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"Resp', "malformed-json"),
        (b"\xff\xfe not json", "malformed-json"),
        (b"[1, 2]", "not-an-event"),
        (b"[" * 200_000, "malformed-json"),  # nesting too deep for the decoder
        (json.dumps({**event("get", "pods"), "apiVersion": "audit.k8s.io/v1beta1"}).encode(),
         "unsupported-api-version"),
        (json.dumps({**event("get", "pods"), "kind": "Policy"}).encode(), "not-an-event"),
        (json.dumps({k: v for k, v in event("get", "pods").items() if k != "verb"}).encode(), "missing-field"),
        (json.dumps({**event("get", "pods"), "requestReceivedTimestamp": "yesterday"}).encode(), "bad-timestamp"),
        (json.dumps({**event("get", "pods"), "requestReceivedTimestamp": "2026-11-20T10:00:00"}).encode(),
         "bad-timestamp"),
        (json.dumps({k: v for k, v in event("get", uri="/x").items() if k != "requestURI"}).encode(), "missing-field"),
        (json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{"stage": 1}]}).encode(),
         "missing-field"),
    ],
)  # fmt: skip
def test_unusable_lines_say_why(line: bytes, reason: str) -> None:
    parsed = error(line)
    assert parsed.reason == reason
    assert parsed.is_error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
FIELDS = ["kind", "apiVersion", "stage", "verb", "user", "impersonatedUser", "objectRef", "requestURI",
          "responseStatus", "annotations", "requestReceivedTimestamp", "stageTimestamp", "items"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_never_crash(line: bytes) -> None:
    assert isinstance(parse_line(line), list | LineError)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)), st.booleans())
def test_any_event_shaped_json_never_crashes(body: dict[str, object], valid_base: bool) -> None:
    merged = {**event("get", "pods"), **body} if valid_base else body
    assert isinstance(parse_line(json.dumps(merged)), list | LineError)
