"""The watch cache drops updates that change nothing the rules read (status-only churn) before they reach the
controller: no dependency marking, no re-audit. Anything the rules read still comes through."""

import copy
from typing import Any

import pytest

from access_hygiene.engine.ground.snapshot import trim_object
from access_hygiene.k8s.watch_cache import Change, ClusterState, WatchSpec, same_for_rules

pytestmark = pytest.mark.unit


def deployment(resource_version: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": resource_version,
            "labels": {"app": "web"},
            "managedFields": [{"manager": "kube-controller-manager", "time": f"t{resource_version}"}],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "serviceAccountName": "web",
                    "containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}],
                },
            },
        },
        "status": status,
    }


def pod(resource_version: str, phase: str = "Pending", message: str = "0/0 nodes are available") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "p-1", "resourceVersion": resource_version},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "c", "image": "nginx:1.27"}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        },
    }


PROGRESSING = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
DEADLINE = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}


def test_a_status_only_update_of_a_workload_is_the_same_for_the_rules() -> None:
    before = trim_object(deployment("10", conditions=[PROGRESSING], replicas=1, unavailableReplicas=1))
    after = trim_object(deployment("11", conditions=[DEADLINE], replicas=1, unavailableReplicas=1))
    assert same_for_rules(before, after)


def test_a_pod_whose_conditions_change_but_not_its_phase_is_the_same_for_the_rules() -> None:
    assert same_for_rules(trim_object(pod("5", message="attempt 1")), trim_object(pod("6", message="attempt 2")))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="nginx:1.28"),
        lambda d: d["spec"]["template"]["spec"].update(serviceAccountName="other"),
        lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(securityContext={"privileged": True}),
        lambda d: d["metadata"].update(generation=2),
        lambda d: d["metadata"]["labels"].update(tier="front"),
        lambda d: d["metadata"].update(annotations={"accesshygiene.io/exempt-until": "2030-01-01"}),
        lambda d: d["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z"),
        lambda d: d["metadata"].update(ownerReferences=[{"kind": "AccessPolicy", "name": "web", "uid": "x"}]),
    ],
    ids=[
        "image",
        "service-account",
        "host-network",
        "security-context",
        "generation",
        "label",
        "annotation",
        "deleting",
        "owner",
    ],
)
def test_anything_the_rules_read_makes_the_update_count(change: Any) -> None:
    before = deployment("10", conditions=[PROGRESSING])
    after = copy.deepcopy(before)
    after["metadata"]["resourceVersion"] = "11"
    change(after)
    assert not same_for_rules(trim_object(before), trim_object(after))


def test_a_pod_phase_change_counts() -> None:
    assert not same_for_rules(trim_object(pod("5")), trim_object(pod("6", phase="Running")))


def test_an_access_policy_status_change_counts_the_operator_reads_it() -> None:
    policy: dict[str, Any] = {
        "apiVersion": "accesshygiene.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1, "resourceVersion": "7"},
        "spec": {"mode": "enforce"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    ready = copy.deepcopy(policy)
    ready["metadata"]["resourceVersion"] = "8"
    ready["status"]["conditions"][0]["status"] = "True"
    assert not same_for_rules(trim_object(policy), trim_object(ready))


def test_a_binding_whose_subjects_change_counts() -> None:
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "shop", "resourceVersion": "1"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}],
    }
    widened = copy.deepcopy(binding)
    widened["metadata"]["resourceVersion"] = "2"
    widened["subjects"].append({"kind": "Group", "name": "system:authenticated"})
    assert not same_for_rules(trim_object(binding), trim_object(widened))
    renamed_field = copy.deepcopy(binding)
    renamed_field["metadata"]["resourceVersion"] = "2"
    del renamed_field["subjects"]
    assert not same_for_rules(trim_object(binding), trim_object(renamed_field))


def test_the_cache_drops_status_churn_before_the_listener_and_passes_real_changes() -> None:
    state = ClusterState([WatchSpec("apps/v1", "Deployment")])
    seen: list[Change] = []
    state.set_listener(seen.extend)
    first = trim_object(deployment("10", conditions=[PROGRESSING]))
    state.upsert("Deployment", first)
    for version in range(11, 31):  # twenty status updates
        state.upsert("Deployment", trim_object(deployment(str(version), conditions=[DEADLINE], observedGeneration=1)))
    assert [change.new for change in seen] == [first]
    assert state.unchanged_updates == 20
    assert state.get("Deployment", "shop", "web") is first  # the stored copy stays

    changed = deployment("31", conditions=[DEADLINE])
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    state.upsert("Deployment", trim_object(changed))
    assert len(seen) == 2
    assert seen[1].old is first
    assert state.get("Deployment", "shop", "web") == trim_object(changed)


def test_a_relist_reports_only_what_the_rules_read_differently() -> None:
    state = ClusterState([WatchSpec("v1", "Pod")])
    state.replace("Pod", [trim_object(pod("5"))])
    seen: list[Change] = []
    state.set_listener(seen.extend)
    state.replace("Pod", [trim_object(pod("9", message="attempt 9"))])
    assert seen == []
    state.replace("Pod", [trim_object(pod("10", phase="Running"))])
    assert [change.new["status"] for change in seen if change.new] == [{"phase": "Running"}]
