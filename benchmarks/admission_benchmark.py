"""Admission benchmark: latency the native admission policies add per request, and the CEL cost headroom of the
most expensive policy (the AccessPolicy requester check), on a real local control plane.

    python benchmarks/admission_benchmark.py [--requests 200] [--rounds 3]

Latency: in one run, the same mix of creates (a RoleBinding, a Role, a Pod, a Deployment, a Secret: kinds the
compiled rules match, all compliant so every request is admitted) is sent sequentially without policies and
with every policy installed (enforce namespace), alternating rounds; prints per-request medians and p90.
Cost: the API server charges each authorizer check 350,000 of the 10,000,000 budget per policy evaluation.
A variant of the requester policy with a limit above the shipped one shows where the API server itself
refuses (`running out of cost budget`): the number of checks that still fit is printed.
Parameters (--operator-samples N, 0 to skip): the operator runs (admission on) and the benchmark measures
exemption expiry -> admission effect (an owner exemption expiring: the first refused CREATE of an owned Pod after
its exempt-until; 0 by construction, as CREATE is judged at the request's own time), exemption added -> effect
(the first admitted CREATE after the exempted owner is created: one watch event and one write of the parameter
object), grant ceiling change -> effect (the ceiling widened, then narrowed: the first AccessPolicy create that
follows), each split into the operator's part (the change written -> the parameter object's new content seen on a
watch) and kube-apiserver's (that -> the first request judged by it), then counts the operator's API requests over
--idle-seconds of idleness from the API server's audit log.
Not a timed test: figures depend on the machine.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from access_hygiene.cli.local_env import report_crd_paths
from access_hygiene.engine.admission.cel import stamp
from access_hygiene.engine.admission.forms import FORMS
from access_hygiene.engine.admission.guards import AUTHORIZER_LIMIT, requester_guard
from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import apply_admission, delete_admission
from access_hygiene.k8s.crds import install_crd
from access_hygiene.k8s.reports import install_report_crds
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import EDITOR_USER, OPERATOR_USER
from access_hygiene.render.admission import MODE_LABEL, AdmissionConfig, render_guard_policy
from access_hygiene.render.admission_parameters import (
    PARAMETERS_NAME,
    PARAMETERS_PLURAL,
    PARAMETERS_VERSION,
    parameters_crd,
)
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES, render_grant_ceiling_role
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
    except kubernetes.client.ApiException as error:
        # By the rule itself: not by a policy kube-apiserver still holds for a moment after it was deleted.
        return "AH-POD-002" in (error.body or "")
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


def _admitted(api: kubernetes.client.ApiClient, path: str, body: dict[str, Any]) -> bool:
    try:
        resources.request(api, "POST", path, query={"dryRun": "All"}, body=body)
    except kubernetes.client.ApiException:
        return False
    return True


def _until_flips(probe: Any, want: bool, what: str, timeout: float = 30.0) -> float:
    """Poll (back to back) until probe() == want; the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe() == want:
            return time.monotonic()
    raise TimeoutError(f"{what}: admission did not change in time")


# The widening rule as the parameter object holds it (every key present).
WIDENED = {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"], "resourceNames": []}
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def _summary(name: str, values: list[float]) -> None:
    print(f"{name}: n={len(values)} p50 {_p(values, 0.5):.0f} ms  p99 {_p(values, 0.99):.0f} ms  "
          f"max {max(values) * 1000:.0f} ms")  # fmt: skip


class ParameterWatch:
    """Every version of the parameter object as a watch delivers it, with the monotonic time it arrived."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._watch = kubernetes.watch.Watch()
        self._api = kubernetes.client.CustomObjectsApi(api)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        stream = self._watch.stream(
            self._api.list_cluster_custom_object, "accesshygiene.io", PARAMETERS_VERSION, PARAMETERS_PLURAL,
            field_selector=f"metadata.name={PARAMETERS_NAME}",
        )  # fmt: skip
        with contextlib.suppress(Exception):  # the control plane stops under it at the end
            for event in stream:
                with self._lock:
                    self.seen.append((time.monotonic(), dict(event["object"].get("spec") or {})))

    def first(self, since: float, predicate: Any, timeout: float = 30.0) -> float:
        """The arrival time of the first version after `since` whose spec satisfies predicate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for when, spec in self.seen:
                    if when >= since and predicate(spec):
                        return when
            time.sleep(0.01)
        raise TimeoutError("the parameter object did not change in time")

    def stop(self) -> None:
        self._watch.stop()


def operator_requests(audit_log: Path, since: float, until: float) -> Counter[str]:
    """The operator's requests in the window, by verb and resource (the API server's audit log)."""
    found: Counter[str] = Counter()
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
                continue
            when = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= when <= until:
                found[f"{event['verb']} {(event.get('objectRef') or {}).get('resource', '')}"] += 1
    return found


def parameters(
    cluster: ControlPlane, api: kubernetes.client.ApiClient, namespace: str, args: argparse.Namespace
) -> None:
    """The running operator's parameters: effect latencies, then idle requests."""
    env = {**os.environ, "KUBECONFIG": str(cluster.operator_kubeconfig), "ACCESS_HYGIENE_ADMISSION_ENABLED": "true",
           "ACCESS_HYGIENE_OPERATOR_NAMESPACE": "access-hygiene", "ACCESS_HYGIENE_METRICS_PORT": "0"}  # fmt: skip
    log = Path(cluster.workdir or ".") / "operator.log"
    with log.open("w") as out:
        operator = subprocess.Popen([sys.executable, "-m", "access_hygiene.cli.main", "run", "--liveness", ""],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    pods = f"/api/v1/namespaces/{namespace}/pods"
    policies = f"/apis/accesshygiene.io/v1alpha1/namespaces/{namespace}/accesspolicies"
    watch = ParameterWatch(api)
    try:
        _wait(lambda: _denied(api, namespace), timeout=120)
        expiry: list[float] = []
        added: list[float] = []
        added_ours: list[float] = []
        added_server: list[float] = []
        for _ in range(args.operator_samples):
            name = f"exempt-{uuid.uuid4().hex[:6]}"
            until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
            annotations = {
                "accesshygiene.io/exempt": "*",
                "accesshygiene.io/exempt-owner": "bench",
                "accesshygiene.io/exempt-reason": "benchmark",
                "accesshygiene.io/exempt-until": stamp(until),
            }
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": name, "annotations": annotations},
                          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                                   "template": {"metadata": {"labels": {"app": name}},
                                                "spec": {"containers": [CONTAINER]}}}}  # fmt: skip
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "owned-", "ownerReferences": [
                       {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": str(uuid.uuid4())}]},
                   "spec": {"serviceAccountName": "app", "hostPID": True, "containers": [CONTAINER]}}  # fmt: skip
            created = time.monotonic()
            resources.request(api, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body=deployment)
            effect = _until_flips(lambda p=pod: _admitted(api, pods, p), True, "exemption added")
            key = f"Deployment.{namespace}.{name}"
            written = watch.first(created, lambda spec, k=key: k in (spec.get("ownerExemptions") or {}))
            added.append(effect - created)
            added_ours.append(written - created)
            added_server.append(max(0.0, effect - written))
            expires = time.monotonic() + (until - datetime.now(UTC)).total_seconds()
            if expires <= time.monotonic():  # the exemption was added too late to watch it expire
                continue
            flipped = _until_flips(lambda p=pod: _admitted(api, pods, p), False, "exemption expired")
            expiry.append(max(0.0, flipped - expires))
        ceiling: list[float] = []
        ceiling_ours: list[float] = []
        ceiling_server: list[float] = []
        quota = {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]}
        asks = {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"generateName": "quota-"}, "spec": {"rbac": {"rules": [quota]}}}  # fmt: skip
        for _ in range(args.operator_samples):
            for rules, want in (([*DEFAULT_GRANT_CEILING_RULES, quota], True), (DEFAULT_GRANT_CEILING_RULES, False)):
                changed = time.monotonic()
                resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling", rules))
                effect = _until_flips(lambda w=want: _admitted(api, policies, asks) == w, True, f"ceiling {want}")
                written = watch.first(changed, lambda spec, w=want: (WIDENED in (spec.get("ceiling") or [])) == w)
                ceiling.append(effect - changed)
                ceiling_ours.append(written - changed)
                ceiling_server.append(max(0.0, effect - written))
        _summary("exemption expiry -> admission effect (CREATE)", expiry)
        _summary("exemption added -> admission effect", added)
        _summary("  of which operator (event -> parameter object written)", added_ours)
        _summary("  of which kube-apiserver (parameter object -> admission)", added_server)
        _summary("grant ceiling change -> admission effect", ceiling)
        _summary("  of which operator (event -> parameter object written)", ceiling_ours)
        _summary("  of which kube-apiserver (parameter object -> admission)", ceiling_server)
        time.sleep(5)  # let the last events settle
        idle_from = time.time()
        time.sleep(args.idle_seconds)
        idle = operator_requests(cluster.audit_log_path, idle_from, time.time())
        print(f"operator API requests over {args.idle_seconds:.0f} idle seconds: {dict(idle) or 'none'}")
        lists = sum(n for request, n in idle.items() if request.startswith("list "))
        writes = sum(n for request, n in idle.items() if request.split(" ")[0] in WRITE_VERBS)
        print(f"  LIST {lists}, writes {writes}")
    except TimeoutError:
        print(log.read_text()[-3000:])
        raise
    finally:
        watch.stop()
        operator.terminate()
        operator.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="creates per round and phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--operator-samples", type=int, default=10, help="parameter latency samples (0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    settings = OperatorSettings(mode="audit", operator_namespace="access-hygiene")
    with ControlPlane(audit_log=True) as cluster:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        install_crd(api, yaml.safe_load((ROOT / "crds" / "accesspolicies.accesshygiene.io.yaml").read_text()))
        install_crd(api, parameters_crd())  # (the first apply_admission waits until admission resolves its kind)
        # As the local default: with the OpenReports CRDs missing, the report writer looks for them every 300 s (a
        # LIST that is not admission's).
        install_report_crds(api, report_crd_paths())
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
        if args.operator_samples:
            delete_admission(api, settings)
            parameters(cluster, api, namespace, args)
        if not args.skip_cost:
            delete_admission(api, settings)
            cost_headroom(cluster, api, namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
