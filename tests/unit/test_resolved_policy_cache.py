"""The parsed-policy cache behind AH-GOV-001 keeps one entry per policy: every status write gives a policy a new
resourceVersion, and an entry per version grew the operator by ~8 KiB a write (issue 26, memory)."""

import copy
from typing import Any

import pytest

from access_hygiene.engine.catalogue import governance

pytestmark = pytest.mark.unit


def policy(version: str, service_account: str = "orders") -> dict[str, Any]:
    return {
        "apiVersion": "accesshygiene.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {
            "name": "orders",
            "namespace": "shop",
            "uid": "uid-orders",
            "resourceVersion": version,
            "generation": 1,
        },
        "spec": {"serviceAccount": {"name": service_account}},
    }


def test_status_writes_keep_one_entry_and_a_spec_change_is_parsed_again() -> None:
    governance._RESOLVED.clear()
    first = governance._resolved(policy("1"))
    assert first is not None
    for version in range(2, 50):  # the operator's status writes: new versions, same content
        assert governance._resolved(policy(str(version))) == first
    assert list(governance._RESOLVED) == ["uid-orders"]
    changed = copy.deepcopy(policy("50", service_account="orders-v2"))
    resolved = governance._resolved(changed)
    assert resolved is not None
    assert resolved.service_account_name == "orders-v2"
    assert len(governance._RESOLVED) == 1


def test_the_same_version_is_not_parsed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    governance._RESOLVED.clear()
    governance._resolved(policy("7"))
    calls: list[str] = []
    from access_hygiene.models import policy as models

    original = models.resolve_policy
    monkeypatch.setattr(models, "resolve_policy", lambda *a, **k: calls.append("parse") or original(*a, **k))
    governance._resolved(policy("7"))
    assert calls == []
    governance._resolved(policy("8"))
    assert calls == ["parse"]
