"""The chart's high availability (docs/ha.md): two replicas by default, rolled one at a time, a disruption budget,
replicas spread over nodes, leader election settings the operator accepts, RBAC on exactly one Lease; one replica
keeps working, and more than one without election is refused."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
from scripts.render_chart import helm_template

from access_hygiene.settings import OperatorSettings
from tests.contract.chart import render

pytestmark = pytest.mark.contract


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_two_replicas_roll_one_at_a_time_under_a_disruption_budget_spread_over_nodes(helm: Path) -> None:
    docs = render(helm)
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (budget,) = _kinds(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == deployment["spec"]["selector"]


def test_the_election_settings_reach_the_operator_and_validate(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, "--set", "leaderElection.leaseDurationSeconds=30", "--set", "leaderElection.leaseName=le")
    env = _env(docs)
    assert "ACCESS_HYGIENE_LEADER_ELECTION_IDENTITY" not in env  # the Pod's host name is its name
    for name, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.leader_election_enabled
    assert settings.leader_election_lease_name == "le"
    assert (settings.lease_timing.lease_duration, settings.lease_timing.renew_deadline) == (30.0, 10.0)
    assert settings.operator_namespace == "access-hygiene"


def test_rbac_names_exactly_the_one_lease_and_create_only_in_the_release_namespace(helm: Path) -> None:
    docs = render(helm)
    (role,) = [r for r in _kinds(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == "access-hygiene"
    named, create = role["rules"]
    assert named == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["access-hygiene"],
        "verbs": ["get", "update", "watch"],
    }
    # A POST is authorized before its body is read: resourceNames cannot narrow create.
    assert create == {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}
    (binding,) = [b for b in _kinds(docs, "RoleBinding") if b["metadata"]["name"].endswith("-leader-election")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (operator,) = [r for r in _kinds(docs, "ClusterRole") if r["metadata"]["name"] == "access-hygiene"]
    cluster_rules = operator["rules"]
    assert not [rule for rule in cluster_rules if "leases" in rule.get("resources", [])]


def test_one_replica_keeps_working_without_a_budget_or_anti_affinity(helm: Path) -> None:
    docs = render(helm, "--set", "replicaCount=1")
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert not _kinds(docs, "PodDisruptionBudget")
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert _env(docs)["ACCESS_HYGIENE_LEADER_ELECTION_ENABLED"] == "true"  # the one replica leads


def test_without_election_one_replica_is_recreated_and_two_are_refused(helm: Path) -> None:
    docs = render(helm, "--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    assert _deployment(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert not [n for n in _env(docs) if n.startswith("ACCESS_HYGIENE_LEADER_ELECTION")]
    assert not [r for r in _kinds(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    with pytest.raises(subprocess.CalledProcessError) as refused:
        helm_template(helm, "--set", "leaderElection.enabled=false")
    assert "replicaCount > 1 needs leaderElection.enabled" in str(refused.value.stderr)


def test_with_the_audit_webhook_a_standby_may_relay_to_the_leaders_pod(helm: Path) -> None:
    docs = render(
        helm,
        "--set", "auditWebhook.enabled=true",
        "--set", "auditWebhook.tlsSecretName=tls",
        "--set", "auditWebhook.tokenSecretName=token",
    )  # fmt: skip
    assert _env(docs)["ACCESS_HYGIENE_AUDIT_WEBHOOK_ADVERTISE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    deployment = _deployment(docs)
    (policy,) = _kinds(docs, "NetworkPolicy")
    own_pods = [{"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}]
    assert {"ports": [{"port": "audit-webhook", "protocol": "TCP"}], "from": own_pods} in policy["spec"]["ingress"]
    assert {"to": own_pods, "ports": [{"port": 9443, "protocol": "TCP"}]} in policy["spec"]["egress"]
