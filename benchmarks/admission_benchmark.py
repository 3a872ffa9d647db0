"""Admission benchmark: latency the native admission policies add per request, and the CEL cost headroom of the
most expensive policy (the AccessPolicy requester check), on a real local control plane.

    python benchmarks/admission_benchmark.py [--requests 200] [--rounds 3]

Latency: in one run, the same mix of creates (a RoleBinding, a Role, a Pod, a Deployment, a Secret: kinds the
compiled rules match, all compliant so every request is admitted) is sent sequentially without policies and
with every policy installed (enforce namespace), alternating rounds; prints per-request medians and p90.
Cost: the API server charges each authorizer check 350,000 of the 10,000,000 budget per policy evaluation.
A variant of the requester policy with a limit above the shipped one shows where the API server itself
refuses (`running out of cost budget`): the number of checks that still fit is printed.
Not a timed test: figures depend on the machine.
"""

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from access_hygiene.engine.admission.forms import FORMS
from access_hygiene.engine.admission.guards import AUTHORIZER_LIMIT, requester_guard
from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import apply_admission, delete_admission
from access_hygiene.k8s.crds import install_crd
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import EDITOR_USER
from access_hygiene.render.admission import MODE_LABEL, AdmissionConfig, render_guard_policy
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from access_hygiene.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
RBAC = "rbac.authorization.k8s.io"
CONTAINER = {"name": "app", "image": "registry.example/app:1",
             "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False}}  # fmt: skip


def _objects(n: str) -> list[dict[str, Any]]:
    pod_spec = {"serviceAccountName": "app", "containers": [CONTAINER]}
    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": f"rb-{n}"},
         "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
         "subjects": [{"kind": "User", "name": "alice", "apiGroup": RBAC}]},
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": f"role-{n}"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{n}"}, "spec": pod_spec},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"dep-{n}"},
         "spec": {"replicas": 0, "selector": {"matchLabels": {"app": n}},
                  "template": {"metadata": {"labels": {"app": n}}, "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{n}"}, "type": "Opaque"},
    ]  # fmt: skip


def _create_all(api: kubernetes.client.ApiClient, namespace: str, count: int) -> list[float]:
    """Per-request latency (seconds) of `count` creates cycling through the kinds."""
    latencies = []
    batch: list[dict[str, Any]] = []
    for _ in range(count):
        if not batch:
            batch = _objects(uuid.uuid4().hex[:8])
        obj = batch.pop(0)
        rtype = resources.resource_type(obj["apiVersion"], obj["kind"])
        started = time.perf_counter()
        resources.request(api, "POST", rtype.path(namespace), body=obj)
        latencies.append(time.perf_counter() - started)
    return latencies


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit("policies did not take effect in time")


def _denied(api: kubernetes.client.ApiClient, namespace: str) -> bool:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}"},
           "spec": {"serviceAccountName": "app", "hostPID": True, "containers": [CONTAINER]}}  # fmt: skip
    try:
        resources.request(api, "POST", f"/api/v1/namespaces/{namespace}/pods", query={"dryRun": "All"}, body=pod)
    except kubernetes.client.ApiException:
        return True
    return False


def latency(
    api: kubernetes.client.ApiClient,
    operator: kubernetes.client.ApiClient,
    settings: OperatorSettings,
    namespace: str,
    args: argparse.Namespace,
) -> None:
    """The admin creates; the policies are installed as the operator's identity (the forms on roles skip the
    requests of whoever installed them, as they skip the operator's own writes)."""
    without: list[float] = []
    with_policies: list[float] = []
    for _ in range(args.rounds):
        delete_admission(operator, settings)
        _wait(lambda: not _denied(api, namespace))
        without += _create_all(api, namespace, args.requests)
        apply_admission(operator, settings, datetime.now(UTC))
        _wait(lambda: _denied(api, namespace))
        with_policies += _create_all(api, namespace, args.requests)
    base, added = statistics.median(without) * 1000, statistics.median(with_policies) * 1000
    core = sum(1 for spec in FORMS.values() if not spec.profile)
    profile = f" + the role-capabilities profile ({len(FORMS) - core} rules, {settings.admission_role_capabilities})"
    print(f"policies installed: {core} compiled rules{profile} + 2 AccessPolicy guards + 1 mutation")
    print(f"creates without policies: n={len(without)} median {base:.2f} ms  p90 {_p(without, 0.9):.2f} ms")
    print(
        f"creates with policies:    n={len(with_policies)} median {added:.2f} ms  p90 {_p(with_policies, 0.9):.2f} ms"
    )
    print(f"added per request (median): {added - base:.2f} ms")


def cost_headroom(cluster: ControlPlane, api: kubernetes.client.ApiClient, namespace: str) -> None:
    """Variant requester policies with 24..30 checks: where the API server's own cost budget refuses."""
    binding = {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding",
               "metadata": {"name": "editor", "namespace": namespace},
               "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"kind": "User", "name": EDITOR_USER, "apiGroup": RBAC}]}  # fmt: skip
    resources.apply(api, binding)
    aggregated = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "bench-accesspolicies-edit",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
        },
        "rules": [{"apiGroups": ["accesshygiene.io"], "resources": ["accesspolicies"], "verbs": ["create"]}],
    }
    resources.apply(api, aggregated)  # fmt: skip
    editor = kubernetes.config.new_client_from_config_dict(
        yaml.safe_load(cluster.render_kubeconfig(cluster.editor_token, EDITOR_USER))
    )
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    held = ["configmaps", "services", "pods", "persistentvolumeclaims", "serviceaccounts", "endpoints"]
    print(f"shipped limit: {AUTHORIZER_LIMIT} authorizer checks = {AUTHORIZER_LIMIT * 350_000:,} of 10,000,000 "
          "(+350,000 for the escalate match condition)")  # fmt: skip
    for checks in (24, 26, 27, 28, 29, 30):
        for obj in render_guard_policy(requester_guard(limit=checks), AdmissionConfig()):
            resources.apply(api, obj)
        time.sleep(2)
        combos = [(r, v) for r in held for v in verbs][:checks]
        rules = [{"apiGroups": [""], "resources": [r], "verbs": [v]} for r, v in combos]
        policy = {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy",
                  "metadata": {"name": f"cost-{checks}"}, "spec": {"rbac": {"rules": rules}}}  # fmt: skip
        try:
            resources.request(editor, "POST", f"/apis/accesshygiene.io/v1alpha1/namespaces/{namespace}/accesspolicies",
                              query={"dryRun": "All"}, body=policy)  # fmt: skip
            outcome = "admitted"
        except kubernetes.client.ApiException as error:
            body = error.body or ""
            outcome = "refused: cost budget" if "cost" in body.lower() else f"refused: {body[:160]}"
        print(f"  {checks} authorizer checks ({checks * 350_000:,} + 350,000): {outcome}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="creates per round and phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    settings = OperatorSettings(mode="audit", operator_namespace="access-hygiene")
    with ControlPlane() as cluster:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        install_crd(api, yaml.safe_load((ROOT / "crds" / "accesspolicies.accesshygiene.io.yaml").read_text()))
        resources.apply(api, render_grant_ceiling_role(settings.grant_ceiling_cluster_role))
        namespace = "bench"
        for name, labels in (("access-hygiene", {}), (namespace, {MODE_LABEL: "enforce"})):
            resources.apply(
                api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
            )
        resources.apply(
            api, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": namespace}}
        )
        operator = kubernetes.config.new_client_from_config(config_file=str(cluster.operator_kubeconfig))
        latency(api, operator, settings, namespace, args)
        if not args.skip_cost:
            delete_admission(api, settings)
            cost_headroom(cluster, api, namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
