"""AccessPolicySpec validation and the defaults resolved from metadata."""

from typing import Any

import pytest
from pydantic import ValidationError

from access_hygiene.models.policy import AccessPolicySpec, resolve_policy

pytestmark = pytest.mark.unit
META = {"name": "orders-api", "namespace": "shop", "uid": "u-1", "generation": 3}


@pytest.mark.parametrize(
    ("spec", "app", "sa", "automount", "labels"),
    [
        ({}, "orders-api", "orders-api", False, {"app.kubernetes.io/name": "orders-api"}),
        ({"app": "orders"}, "orders", "orders", False, {"app.kubernetes.io/name": "orders"}),
        (
            {"serviceAccount": {"name": "custom"}},
            "orders-api",
            "custom",
            False,
            {"app.kubernetes.io/name": "orders-api"},
        ),
        (
            {"rbac": {"rules": [{"resources": ["pods"], "verbs": ["get"]}]}},
            "orders-api",
            "orders-api",
            True,
            {"app.kubernetes.io/name": "orders-api"},
        ),
        (
            {
                "rbac": {"rules": [{"resources": ["pods"], "verbs": ["get"]}]},
                "serviceAccount": {"automountToken": False},
            },
            "orders-api",
            "orders-api",
            False,
            {"app.kubernetes.io/name": "orders-api"},
        ),
        (
            {"podSelector": {"matchLabels": {"tier": "api"}}},
            "orders-api",
            "orders-api",
            False,
            {"tier": "api"},
        ),
    ],
)
def test_resolve_policy_defaults(
    spec: dict[str, Any], app: str, sa: str, automount: bool, labels: dict[str, str]
) -> None:
    policy = resolve_policy(META, AccessPolicySpec.model_validate(spec))
    assert (policy.app, policy.service_account_name, policy.automount_token, policy.pod_labels) == (
        app,
        sa,
        automount,
        labels,
    )
    assert (policy.namespace, policy.uid, policy.generation) == ("shop", "u-1", 3)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"rbac": {"rules": [{"resources": ["pods"], "verbs": ["GET"]}]}}, "verbs"),
        ({"rbac": {"rules": [{"resources": [], "verbs": ["get"]}]}}, "resources"),
        (
            {"network": {"ingress": [{"from": [{"app": "web", "ipBlock": {"cidr": "10.0.0.0/8"}}]}]}},
            "ipBlock",
        ),
        ({"network": {"egress": [{"to": [{}]}]}}, "at least one"),
        ({"network": {"ingress": [{"from": [{"namespace": "a", "namespaceSelector": {}}]}]}}, "namespace"),
        ({"mode": "yolo"}, "mode"),
        ({"network": {"egress": [{"to": [{"ipBlock": {"cidr": "nonsense"}}]}]}}, "not a CIDR"),
        ({"network": {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["1.2.3.4/40"]}}]}]}}, "CIDR"),
        ({"unknownField": 1}, "unknownField"),
        ({"app": "Bad_Name"}, "app"),
        ({"network": {"ingress": [{"from": [{"app": "web"}], "ports": [{"port": 70000}]}]}}, "port"),
    ],
)
def test_invalid_specs_are_rejected_with_the_field_named(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        AccessPolicySpec.model_validate(spec)
    assert fragment in str(error.value)


def test_wire_format_round_trips() -> None:
    raw = {
        "app": "web",
        "network": {
            "ingress": [{"from": [{"app": "lb", "namespace": "ingress"}], "ports": [{"port": "http"}]}],
            "kubeAPIServer": True,
        },
    }
    spec = AccessPolicySpec.model_validate(raw)
    dumped = spec.model_dump(by_alias=True, exclude_defaults=True)
    assert AccessPolicySpec.model_validate(dumped) == spec
    assert dumped["network"]["kubeAPIServer"] is True
