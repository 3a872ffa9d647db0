"""Findings built by the audit share what they can (issue 26, memory): one fields set per shape, interned messages
and subject strings. Sharing must never show: equal to the validated models, and nothing one finding does changes
another."""

import copy
import pickle

import pytest

from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject

pytestmark = pytest.mark.unit

REF = ObjectRef.trusted("RoleBinding", "rb", "ns", "rbac.authorization.k8s.io/v1")


def _message(*parts: str) -> str:
    return " ".join(parts)  # a new string object each call, as the rules' f-strings make


def _trusted(name: str = "app", message: str | None = None) -> Finding:
    subject = Subject.trusted("ServiceAccount", name, "ns")
    return Finding.trusted("AH-RBAC-009", Severity.HIGH, "ns", REF, message or _message("can", "read"), subject)


def _validated(name: str = "app") -> Finding:
    subject = Subject(kind="ServiceAccount", name=name, namespace="ns")
    return Finding(rule_id="AH-RBAC-009", severity=Severity.HIGH, namespace="ns", object=REF, subject=subject,
                   message="can read")  # fmt: skip


def test_trusted_findings_share_one_fields_set_and_still_equal_the_validated_ones() -> None:
    first, second = _trusted("a"), _trusted("b")
    assert first.model_fields_set is second.model_fields_set
    assert first.object.model_fields_set is ObjectRef.trusted("Role", "r", "x", "v").model_fields_set
    assert first == _validated("a")
    assert hash(first) == hash(_validated("a"))
    assert first.model_fields_set == _validated("a").model_fields_set
    assert first.model_dump(exclude_unset=True) == _validated("a").model_dump(exclude_unset=True)
    assert first.model_dump_json() == _validated("a").model_dump_json()


def test_a_copy_with_updates_leaves_the_shared_fields_set_alone() -> None:
    finding, other = _trusted("a"), _trusted("b")
    before = set(other.model_fields_set)
    exempted = finding.model_copy(update={"exempted": True, "exemption_reason": "r"})
    assert {"exempted", "exemption_reason"} <= exempted.model_fields_set
    assert other.model_fields_set == before == finding.model_fields_set
    assert not {"exempted", "exemption_reason"} & _trusted("c").model_fields_set
    assert exempted == _validated("a").model_copy(update={"exempted": True, "exemption_reason": "r"})


def test_a_refused_assignment_leaves_the_shared_fields_set_alone() -> None:
    finding = _trusted()
    with pytest.raises(ValueError, match="frozen"):
        finding.exempted = True  # type: ignore[misc]
    assert "exempted" not in _trusted("other").model_fields_set


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, lambda f: pickle.loads(pickle.dumps(f))])
def test_copies_and_pickles_are_equal_and_own_their_fields_set(duplicate: object) -> None:
    finding = _trusted()
    twin = duplicate(finding)  # type: ignore[operator]
    assert twin == finding
    assert hash(twin) == hash(finding)
    assert twin.model_fields_set == finding.model_fields_set


def test_equal_messages_and_subject_strings_are_one_object() -> None:
    first, second = _trusted("a", _message("can", "get", "secrets")), _trusted("b", _message("can", "get", "secrets"))
    assert first.message is second.message
    assert _trusted("a").key[4] is _trusted("a").key[4] == "system:serviceaccount:ns:a"
    assert _trusted("a").key == _validated("a").key
