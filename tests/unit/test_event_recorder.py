"""EventRecorder.record: a finding about an RBAC object is announced once while it stays, again after it went away
and came back; a re-audit of some scopes forgets only what went away there."""

from typing import Any

import pytest

from access_hygiene.k8s.events import EventRecorder
from access_hygiene.models.findings import Finding, ObjectRef, Severity

pytestmark = pytest.mark.unit


def _finding(namespace: str, name: str, exempted: bool = False) -> Finding:
    ref = ObjectRef(kind="RoleBinding", name=name, namespace=namespace, api_version="rbac.authorization.k8s.io/v1")
    return Finding(
        rule_id="AH-RBAC-001", severity=Severity.CRITICAL, namespace=namespace, object=ref, message=name,
        exempted=exempted,
    )  # fmt: skip


def _uid(kind: str, namespace: str, name: str) -> str:
    return f"uid-{namespace}-{name}"


def _announced(recorder: EventRecorder) -> list[str]:
    names = [finding.object.name for finding, _ in recorder._pending]
    recorder._pending.clear()
    return names


def test_findings_are_announced_once_while_they_stay_and_again_when_they_return() -> None:
    recorder = EventRecorder(api=None)  # type: ignore[arg-type]  # not started: nothing is posted
    a, b, c = _finding("apps", "a"), _finding("apps", "b"), _finding("web", "c")
    recorder.record([a, b], _uid, {"apps"})
    recorder.record([c], _uid, {"web"})
    assert _announced(recorder) == ["a", "b", "c"]
    recorder.record([a, b], _uid, {"apps"})
    assert _announced(recorder) == []  # still there: not again
    recorder.record([a], _uid, {"apps"})  # b went away in apps; web was not re-audited: c is still known
    recorder.record([c], _uid, {"web"})
    recorder.record([a, b], _uid, {"apps"})
    assert _announced(recorder) == ["b"]  # b came back


def test_an_exempted_finding_is_not_announced_and_a_seeded_one_not_again() -> None:
    recorder = EventRecorder(api=None)  # type: ignore[arg-type]
    seeded, exempted = _finding("apps", "old"), _finding("apps", "quiet", exempted=True)
    recorder.seed([seeded], _uid)
    recorder.record([seeded, exempted], _uid, {"apps"})
    assert _announced(recorder) == []
    recorder.record([], _uid, {"apps"})  # both gone
    recorder.record([seeded, _finding("apps", "quiet")], _uid, {"apps"})
    assert _announced(recorder) == ["old", "quiet"]


def test_an_object_without_uid_is_not_announced_until_it_has_one() -> None:
    recorder = EventRecorder(api=None)  # type: ignore[arg-type]
    finding = _finding("apps", "a")
    uids: dict[str, Any] = {}
    recorder.record([finding], lambda kind, namespace, name: uids.get(name), {"apps"})
    assert _announced(recorder) == []
    uids["a"] = "uid-a"
    recorder.record([finding], lambda kind, namespace, name: uids.get(name), {"apps"})
    assert _announced(recorder) == ["a"]
