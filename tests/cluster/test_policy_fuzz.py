"""Fuzzed AccessPolicy specs: the API rejects or accepts them; the operator never crashes on either."""

import uuid
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kopf.testing import KopfRunner

from tests.cluster.conftest import wait_for
from tests.cluster.test_policy_operator import GROUP, PLURAL, VERSION, condition, create_policy, get_policy
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

names = st.one_of(
    st.sampled_from(["pods", "configmaps", "secrets", "*", "nodes/proxy", "pods/exec"]), st.text(max_size=8)
)
verbs = st.one_of(
    st.sampled_from(["get", "list", "watch", "create", "*", "escalate", "impersonate"]), st.text(max_size=6)
)
rule = st.fixed_dictionaries(
    {"resources": st.lists(names, max_size=3), "verbs": st.lists(verbs, max_size=3)},
    optional={
        "apiGroups": st.lists(st.sampled_from(["", "apps", "*", "rbac.authorization.k8s.io"]), max_size=2),
        "resourceNames": st.lists(st.text(max_size=5), max_size=2),
    },
)
peer = st.fixed_dictionaries(
    {},
    optional={
        "app": st.one_of(st.just("web"), st.text(max_size=5)),
        "namespace": st.just("ingress"),
        "ipBlock": st.fixed_dictionaries({"cidr": st.sampled_from(["10.0.0.0/8", "nonsense", ""])}),
    },
)
spec_strategy = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["audit", "enforce", "bogus"]),
        "rbac": st.fixed_dictionaries({"rules": st.lists(rule, max_size=3)}),
        "network": st.fixed_dictionaries(
            {},
            optional={
                "ingress": st.lists(st.fixed_dictionaries({"from": st.lists(peer, max_size=2)}), max_size=2),
                "dns": st.booleans(),
                "kubeAPIServer": st.booleans(),
            },
        ),
        "serviceAccount": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=6), "automountToken": st.booleans()}
        ),
    },
)


# Policy names up to the API's 253 characters: DNS labels joined by dots (label values cap at 63, names do not).
name_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=63)
policy_names = st.lists(name_label, min_size=1, max_size=5).map(".".join).filter(lambda n: len(n) <= 240)


def generated_objects(api: kubernetes.client.ApiClient, namespace: str, name: str) -> list[str]:
    """Objects of the policy in the namespace: its ServiceAccount, Role, RoleBinding or NetworkPolicy."""
    core, rbac = kubernetes.client.CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    networking = kubernetes.client.NetworkingV1Api(api)
    found = []
    for listing in (
        core.list_namespaced_service_account(namespace).items,
        rbac.list_namespaced_role(namespace).items,
        rbac.list_namespaced_role_binding(namespace).items,
        networking.list_namespaced_network_policy(namespace).items,
    ):
        for obj in listing:
            owners = obj.metadata.owner_references or []
            if any(ref.kind == "AccessPolicy" and ref.name == name for ref in owners):
                found.append(f"{obj.kind or type(obj).__name__} {obj.metadata.name}")
    return found


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=spec_strategy, suffix=policy_names)
def test_fuzzed_specs_never_crash_the_operator(
    operator: KopfRunner, cluster: Cluster, namespace: str, spec: dict[str, Any], suffix: str
) -> None:
    name = f"fz-{uuid.uuid4().hex[:6]}-{suffix}"
    with cluster.api_client() as api:
        try:
            create_policy(api, namespace, name, spec)
        except kubernetes.client.ApiException as error:
            rejected_status = error.status
        else:
            rejected_status = None
        if rejected_status is not None:
            event("rejected by the CRD schema")
            assert rejected_status == 422  # the schema said no, with a reason
            return
        # Accepted by the schema: the operator must answer with a Ready condition for this generation.
        policy = wait_for(lambda: condition(get_policy(api, namespace, name), "Ready"), timeout=20)
        assert policy["reason"], policy
        event(f"accepted; Ready={policy['status']} reason={policy['reason']}")
        event(f"name length {'<= 63' if len(name) <= 63 else '> 63'}")
        if policy["status"] == "False":  # refused: all or nothing, so nothing of it may exist
            assert generated_objects(api, namespace, name) == [], policy
        kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        # Wait for the operator's finalizer to finish: kopf draws from the global `random` while it talks to the
        # API, which hypothesis would take for randomness inside the next example's strategy.
        wait_for(lambda: not policy_exists(api, namespace, name), timeout=20)


def policy_exists(api: kubernetes.client.ApiClient, namespace: str, name: str) -> bool:
    try:
        get_policy(api, namespace, name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_operator_still_reconciles_after_fuzzing(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    # Runs after the fuzz test (file order): a crashed or wedged operator would never make this Ready.
    with cluster.api_client() as api:
        create_policy(api, namespace, "sentinel", {"mode": "enforce"})
        ready = wait_for(lambda: condition(get_policy(api, namespace, "sentinel"), "Ready"), timeout=20)
        assert (ready["status"], ready["reason"]) == ("True", "Reconciled")
