"""Safety on the real control plane: no finalizers on objects the operator does not own, refused policies
grant nothing, long names get a status, labels the API would refuse are caught before any write."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.cluster.conftest import OPERATOR_ENV, operator_writes, wait_for, wait_for_authorizer
from tests.cluster.test_policy_operator import can, condition, create_policy, get_policy
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

LEGACY_FINALIZER = "accesshygiene.io/cleanup"
LEGACY_ANNOTATION = "accesshygiene.io/last-handled-configuration"
# What an SA could be granted by mistake; checked before and after each refused policy.
PROBES = [
    ("get", "configmaps", ""),
    ("list", "configmaps", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("delete", "pods", ""),
    ("get", "secrets", ""),
    ("create", "deployments", ""),
    ("get", "services", ""),
]


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {**OPERATOR_ENV, "ACCESS_HYGIENE_MODE": "enforce"}


def settled(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The policy's Ready condition for its current generation."""

    def ready() -> dict[str, Any] | None:
        policy = get_policy(api, namespace, name)
        if (policy.get("status") or {}).get("observedGeneration") != policy["metadata"]["generation"]:
            return None
        return condition(policy, "Ready")

    result: dict[str, Any] = wait_for(ready, timeout=30)
    return result


def grants(api: kubernetes.client.ApiClient, namespace: str, account: str) -> set[tuple[str, str, str]]:
    wait_for_authorizer(api)  # what the operator wrote (or removed) is in the store before the authorizer has it
    return {probe for probe in PROBES if can(api, namespace, account, *probe)}


def test_operator_never_puts_a_finalizer_on_namespaces_and_removes_old_ones(
    crd_installed: Cluster, operator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = f"legacy-{uuid.uuid4().hex[:8]}"
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    with crd_installed.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        # What earlier versions left behind: kopf's finalizer and diff-base annotation on a Namespace.
        core.create_namespace(
            {
                "metadata": {
                    "name": legacy,
                    "finalizers": [LEGACY_FINALIZER],
                    "annotations": {LEGACY_ANNOTATION: "{}", "keep-me": "yes"},
                }
            }
        )
        core.create_namespace({"metadata": {"name": fresh, "labels": {"accesshygiene.io/mode": "enforce"}}})
        for key, value in {**operator_env, "KUBECONFIG": str(crd_installed.control_plane.operator_kubeconfig)}.items():
            monkeypatch.setenv(key, value)
        with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "access_hygiene.handlers"], timeout=60):

            def cleaned() -> bool:
                metadata = core.read_namespace(legacy).metadata
                return LEGACY_FINALIZER not in (metadata.finalizers or []) and LEGACY_ANNOTATION not in (
                    metadata.annotations or {}
                )

            wait_for(cleaned, timeout=20)
            assert core.read_namespace(legacy).metadata.annotations["keep-me"] == "yes"
            # The operator did its work on the fresh namespace...
            wait_for(
                lambda: "accesshygiene.io/hygiene-summary" in (core.read_namespace(fresh).metadata.annotations or {})
            )
            for ns in core.list_namespace().items:
                assert LEGACY_FINALIZER not in (ns.metadata.finalizers or []), ns.metadata.name
        # ...and with the operator stopped, deleting namespaces is not blocked by anything of ours.
        started = time.monotonic()
        core.delete_namespace(fresh)
        core.delete_namespace(legacy)

        def gone(name: str) -> bool:
            try:
                core.read_namespace(name)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return True
                raise
            return False

        wait_for(lambda: gone(fresh) and gone(legacy), timeout=30)
        print(f"namespaces deleted {time.monotonic() - started:.1f}s after the request, operator stopped")


@pytest.fixture
def user_role(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A Role the user owns, holding the name the policy's Role would get, and granting get pods."""
    name = "access-hygiene-orders-api"
    with cluster.api_client() as api:
        kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role(
            namespace,
            {"metadata": {"name": name}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        )
    return name


CONFIGMAP_READER = {
    "mode": "enforce",
    "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
}


def test_name_conflict_writes_nothing(operator: KopfRunner, cluster: Cluster, namespace: str, user_role: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", CONFIGMAP_READER)
        ready = settled(api, namespace, "orders-api")
        assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
        assert "nothing was written" in ready["message"]
        # The RoleBinding that would have bound the SA to the user's Role was never written, nor the SA.
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        assert not rbac.list_namespaced_role_binding(namespace).items
        accounts = [
            a.metadata.name for a in kubernetes.client.CoreV1Api(api).list_namespaced_service_account(namespace).items
        ]
        assert "orders-api" not in accounts
        assert grants(api, namespace, "orders-api") == set()
        assert policy_object_writes(cluster, 0, namespace, "orders-api") == []


def test_two_policies_sharing_a_service_account_do_not_add_up(
    operator: KopfRunner, cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        shared = {"serviceAccount": {"name": "shared"}}
        create_policy(api, namespace, "first", {**CONFIGMAP_READER, **shared})
        assert settled(api, namespace, "first")["reason"] == "Reconciled"
        pods_reader = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
        create_policy(api, namespace, "second", {"mode": "enforce", "rbac": {"rules": [pods_reader]}, **shared})
        ready = settled(api, namespace, "second")
        assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
        assert grants(api, namespace, "shared") == {("get", "configmaps", "")}


@pytest.mark.parametrize("length", [63, 64, 253])
def test_long_policy_names_get_a_status(operator: KopfRunner, cluster: Cluster, namespace: str, length: int) -> None:
    name = ("p" * length)[:length]
    with cluster.api_client() as api:
        create_policy(api, namespace, name, CONFIGMAP_READER)
        ready = settled(api, namespace, name)
        assert (ready["status"], ready["reason"]) == ("True", "Reconciled"), ready
        assert grants(api, namespace, name) == {("get", "configmaps", "")}
        # With a network section the app label would be the name: over 63 characters the API would refuse it.
        networked = f"n{name[1:]}"
        create_policy(api, namespace, networked, {**CONFIGMAP_READER, "network": {"dns": True}})
        ready = settled(api, namespace, networked)
        if length <= 63:
            assert ready["status"] == "True", ready
        else:
            assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec"), ready
            assert "label app.kubernetes.io/name=" in ready["message"]
            assert "at most 63 characters" in ready["message"]
            assert grants(api, namespace, networked) == set()
        # Deleting a long-named policy cleans up (it used to fail on a label selector built from the name).
        kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "accesshygiene.io", "v1alpha1", namespace, "accesspolicies", name
        )
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        wait_for(lambda: not [r for r in rbac.list_namespaced_role(namespace).items if name in r.metadata.name[:70]])


KINDS_OF_REFUSAL = ["conflict-role", "conflict-account", "ceiling", "bad-label", "fine"]


# Every kind of refusal with every verb set: the domain is small enough to enumerate, which beats sampling it
# (and hypothesis cannot run beside kopf, whose threads draw from the global `random` while it generates data).
@pytest.mark.parametrize("kind", KINDS_OF_REFUSAL)
@pytest.mark.parametrize("verbs", [{"get"}, {"list"}, {"get", "list"}], ids=["get", "list", "get+list"])
def test_a_refused_policy_grants_nothing_beyond_what_was_there(
    operator: KopfRunner, cluster: Cluster, namespace: str, kind: str, verbs: set[str]
) -> None:
    name = f"p-{uuid.uuid4().hex[:6]}"
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": sorted(verbs)}
    spec: dict[str, Any] = {"mode": "enforce", "rbac": {"rules": [rule]}}
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        if kind == "conflict-role":
            rbac.create_namespaced_role(
                namespace,
                {
                    "metadata": {"name": f"access-hygiene-{name}"},
                    "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
                },
            )
        elif kind == "conflict-account":
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        elif kind == "ceiling":
            spec["rbac"]["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
        elif kind == "bad-label":
            spec["podSelector"] = {"matchLabels": {"not a valid key": "x"}}  # the schema checks values, not keys
            spec["network"] = {"dns": True}
        before = grants(api, namespace, name)
        create_policy(api, namespace, name, spec)
        ready = settled(api, namespace, name)
        after = grants(api, namespace, name)
        if kind == "fine":
            assert ready["status"] == "True", ready
            assert after == before | {(verb, "pods", "") for verb in verbs}
        else:
            assert ready["status"] == "False", ready
            assert after <= before, f"{kind}: refused policy granted {after - before}"


def test_bad_labels_are_refused_before_any_write(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    since = time.time()
    with cluster.api_client() as api:
        spec = {**CONFIGMAP_READER, "podSelector": {"matchLabels": {"tier/": "web"}}, "network": {"dns": True}}
        create_policy(api, namespace, "labelled", spec)
        ready = settled(api, namespace, "labelled")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "label key 'tier/'" in ready["message"]
    assert policy_object_writes(cluster, since, namespace, "labelled") == []


def policy_object_writes(cluster: Cluster, since: float, namespace: str, policy: str) -> list[dict[str, Any]]:
    """Writes of the policy's generated objects (not its own status, not the Warning Event announcing a refusal,
    not the namespace's hygiene controls)."""
    return [
        w
        for w in operator_writes(cluster, since, namespace)
        if w.get("resource") not in ("accesspolicies", "events") and policy in str(w.get("name", ""))
    ]
