"""The event-driven operator at scale on the real local control plane. Prints figures; asserts nothing.

    python benchmarks/live_scale.py                          # both profiles, full scale, side by side (~40 min)
    python benchmarks/live_scale.py --profile realistic --scale 0.1 --idle-seconds 60   # a couple of minutes

Two populations (--profile), each in a control plane of its own, one after the other:
- light: the developers' population (RBAC, Deployments without pods, one AccessPolicy shape, no report CRDs);
- realistic: the same RBAC counts with risky shapes mixed in, 2,000 Deployments whose Pods the controller-manager
  creates (Pending: no node), AccessPolicies of three shapes, the OpenReports CRDs installed as the chart installs
  them (so reports are written, the default), and workload status churn (Deployment conditions, Pending Pods'
  scheduling conditions) from the operator's start to the end, idle window included.
The API server's audit log is on in both.

Measures, per profile, in one run:
- the floor: a bare paged LIST (raw JSON, 500 a page, median of 3) of every kind the operator watches;
- operator start -> every AccessPolicy Ready, and -> every namespace fixed (enforce mode); the writes that took
  (from the audit log) and their floors: as many bare server-side applies of small ConfigMaps from 16 threads, and
  (the operator stopped) the operator's own writes replayed bare on its objects from 16 threads (like for like);
- event -> finding in /metrics (a cluster-admin ClusterRoleBinding): during the post-start write period (samples
  begin as soon as all policies are Ready, while the operator still writes) and once settled;
- event -> converged (an AccessPolicy's rules patched -> its Role updated);
- over --idle-seconds: the operator's CPU seconds (/proc/PID/stat), its API requests (audit log) and the status
  updates the churn made;
- the operator's RSS once converged and its peak (VmHWM).
"""

import argparse
import concurrent.futures
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from access_hygiene.cli.local_env import report_crd_paths  # noqa: E402
from access_hygiene.k8s import resources  # noqa: E402
from access_hygiene.k8s.bootstrap import install_prerequisites  # noqa: E402
from access_hygiene.k8s.client import make_api_client, with_pool_size  # noqa: E402
from access_hygiene.k8s.controller import WATCHED_KINDS  # noqa: E402
from access_hygiene.k8s.reports import REPORT_TYPES, install_report_crds  # noqa: E402
from access_hygiene.localcluster.controlplane import OPERATOR_USER, ControlPlane, free_port  # noqa: E402
from access_hygiene.settings import OperatorSettings  # noqa: E402

# What the benchmark creates; the control plane adds its own (a `default` ServiceAccount per namespace, ~70
# bootstrap ClusterRoles, ~50 ClusterRoleBindings): 12,000 ServiceAccounts, ~570 ClusterRoles, ~1,050 bindings.
SCALE = {
    "namespaces": 2000,
    "serviceaccounts": 10000,
    "roles": 5000,
    "rolebindings": 20000,
    "clusterroles": 500,
    "clusterrolebindings": 1000,
    "deployments": 2000,
    "accesspolicies": 1000,
}
RBAC = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
MODE_LABEL = {"accesshygiene.io/mode": "enforce"}
# Latency probes poll this often: every scrape of /metrics and every GET costs the operator or the API server
# CPU on the same two cores, so a tighter loop would inflate what it measures.
POLL_SECONDS = 0.025
POST_START_WINDOW_SECONDS = 60.0  # how long after "all Ready" the post-start finding samples may go on
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = ("create", "patch", "update", "delete")


# Populations ------------------------------------------------------------------------------------


def names(counts: dict[str, int]) -> list[str]:
    return [f"ns-{i:05d}" for i in range(counts["namespaces"])]


def light_population(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The developers' population: uniform RBAC, Deployments scaled to zero, one AccessPolicy shape."""
    namespaces = names(counts)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": MODE_LABEL}} for ns in namespaces
    ]
    for i in range(counts["clusterroles"]):
        rules = [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list"]}]
        if i % 50 == 0:
            rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
        objects.append({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": f"cr-{i:04d}"}, "rules": rules})
    for i in range(counts["serviceaccounts"]):
        objects.append(service_account(namespaces, i))
    for i in range(counts["roles"]):
        ns = namespaces[i % len(namespaces)]
        rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]
        objects.append(
            {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": f"role-{i:05d}", "namespace": ns}, "rules": rules}
        )
    for i in range(counts["rolebindings"]):
        sa, sa_ns = sa_of(namespaces, counts, i)
        ns = namespaces[i % len(namespaces)]
        if i % 2:
            ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": f"cr-{i % counts['clusterroles']:04d}"}
        else:
            ref = {"apiGroup": RBAC_GROUP, "kind": "Role", "name": f"role-{(i % counts['roles']):05d}"}
            ns = namespaces[(i % counts["roles"]) % len(namespaces)]
        subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]
        objects.append(role_binding(f"rb-{i:05d}", ns, ref, subjects))
    for i in range(counts["clusterrolebindings"]):
        sa, sa_ns = sa_of(namespaces, counts, i * 7)
        ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": f"cr-{i % counts['clusterroles']:04d}"}
        objects.append(
            cluster_role_binding(f"crb-{i:04d}", ref, [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}])
        )
    for i in range(counts["deployments"]):
        objects.append(deployment(namespaces[i % len(namespaces)], f"app-{i:05d}", replicas=0, pod_spec=plain_pod()))
    for i in range(counts["accesspolicies"]):
        objects.append(rbac_and_network_policy(namespaces[i % len(namespaces)], f"ap-{i:05d}", ["get"]))
    return objects


def realistic_population(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The same counts shaped like a cluster: risky and harmless roles mixed, bindings to users, groups and the
    built-in roles, aggregated ClusterRoles, Deployments with one replica (their Pods stay Pending) of varied pod
    security, three AccessPolicy shapes."""
    namespaces = names(counts)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {**MODE_LABEL, "team": f"t{i % 40}"}},
        }
        for i, ns in enumerate(namespaces)
    ]
    for i in range(counts["clusterroles"]):
        metadata: dict[str, Any] = {"name": f"cr-{i:04d}"}
        rule_set = i % 10
        if rule_set == 0:  # aggregated into the built-in view/edit roles, as operators' CRDs do
            metadata["labels"] = {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
            rules = [{"apiGroups": [f"g{i}.example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}]
        elif rule_set == 1:  # an aggregating role of its own
            metadata["labels"] = {"example.com/aggregate": f"a{i % 7}"}
            cluster_role = {
                "apiVersion": RBAC,
                "kind": "ClusterRole",
                "metadata": {"name": f"cr-{i:04d}"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate": f"a{i % 7}"}}]},
            }
            objects.append(cluster_role)
            continue
        elif rule_set == 2:  # a controller: reads secrets, writes pods
            rules = [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list"]},
            ]
        elif rule_set == 3:  # wildcard within a group
            rules = [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}]
        elif rule_set == 4:
            rules = [{"apiGroups": [""], "resources": ["pods/exec", "pods"], "verbs": ["create", "get"]}]
        else:
            rules = [
                {"apiGroups": [""], "resources": ["configmaps", "pods", "services"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
            ]
        objects.append({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": metadata, "rules": rules})
    for i in range(counts["serviceaccounts"]):
        objects.append(service_account(namespaces, i))
    for i in range(counts["roles"]):
        ns = namespaces[i % len(namespaces)]
        shape = i % 6
        if shape == 0:
            rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]
        elif shape == 1:
            rules = [{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["get", "list", "watch", "update"]}]
        elif shape == 2:
            rules = [{"apiGroups": [RBAC_GROUP], "resources": ["rolebindings"], "verbs": ["create", "update"]}]
        else:
            rules = [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "update"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
            ]
        objects.append(
            {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": f"role-{i:05d}", "namespace": ns}, "rules": rules}
        )
    builtin = ("view", "edit", "admin", "view", "edit")
    for i in range(counts["rolebindings"]):
        sa, sa_ns = sa_of(namespaces, counts, i)
        ns = namespaces[i % len(namespaces)]
        kind_of_ref = i % 20
        if kind_of_ref < 10:
            ref = {"apiGroup": RBAC_GROUP, "kind": "Role", "name": f"role-{(i % counts['roles']):05d}"}
            ns = namespaces[(i % counts["roles"]) % len(namespaces)]
        elif kind_of_ref < 19:
            ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": f"cr-{i % counts['clusterroles']:04d}"}
        else:
            ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": builtin[i % len(builtin)]}
        subject_kind = i % 20
        if subject_kind < 14:
            subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]
        elif subject_kind < 17:
            subjects = [{"apiGroup": RBAC_GROUP, "kind": "User", "name": f"user{i % 300}@example.com"}]
        elif subject_kind < 19:
            subjects = [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": f"team-{i % 40}"}]
        else:  # two subjects: a ServiceAccount from another namespace and a user
            subjects = [
                {"kind": "ServiceAccount", "name": sa, "namespace": sa_ns},
                {"apiGroup": RBAC_GROUP, "kind": "User", "name": f"oncall{i % 20}@example.com"},
            ]
        objects.append(role_binding(f"rb-{i:05d}", ns, ref, subjects))
    for i in range(counts["clusterrolebindings"]):
        sa, sa_ns = sa_of(namespaces, counts, i * 7)
        ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": f"cr-{i % counts['clusterroles']:04d}"}
        if i % 5 == 0:
            subjects = [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": f"team-{i % 40}"}]
        else:
            subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]
        objects.append(cluster_role_binding(f"crb-{i:04d}", ref, subjects))
    for i in range(counts["deployments"]):
        ns = namespaces[i % len(namespaces)]
        pod = plain_pod()
        if i % 4 == 0 and i < counts["serviceaccounts"]:
            pod["serviceAccountName"] = f"sa-{i:05d}"  # lives in namespaces[i % N], as this Deployment does
        if i % 3 == 0:
            pod["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
            pod["containers"][0]["securityContext"] = {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
        if i % 25 == 1:
            pod["containers"][0]["securityContext"] = {"privileged": True}
        if i % 40 == 2:
            pod["hostNetwork"] = True
        objects.append(deployment(ns, f"app-{i:05d}", replicas=1, pod_spec=pod))
    for i in range(counts["accesspolicies"]):
        ns = namespaces[i % len(namespaces)]
        shape = i % 3
        if shape == 0:
            objects.append(rbac_and_network_policy(ns, f"ap-{i:05d}", ["get"]))
        elif shape == 1:
            objects.append(network_only_policy(ns, f"ap-{i:05d}"))
        else:
            objects.append(wide_policy(ns, f"ap-{i:05d}"))
    return objects


def sa_of(namespaces: list[str], counts: dict[str, int], i: int) -> tuple[str, str]:
    index = i % counts["serviceaccounts"]
    return f"sa-{index:05d}", namespaces[index % len(namespaces)]


def service_account(namespaces: list[str], i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": f"sa-{i:05d}", "namespace": namespaces[i % len(namespaces)]},
    }


def role_binding(name: str, namespace: str, ref: dict[str, str], subjects: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": ref,
        "subjects": subjects,
    }


def cluster_role_binding(name: str, ref: dict[str, str], subjects: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": ref,
        "subjects": subjects,
    }


def plain_pod() -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 8080}]}]}


def deployment(namespace: str, name: str, replicas: int, pod_spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def access_policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "accesshygiene.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"mode": "enforce", **spec},
    }


def rbac_and_network_policy(namespace: str, name: str, verbs: list[str]) -> dict[str, Any]:
    """Shape 1 (and the light population's only shape): one rule, DNS allowed."""
    return access_policy(
        namespace,
        name,
        {
            "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]},
            "network": {"dns": True},
        },
    )


def network_only_policy(namespace: str, name: str) -> dict[str, Any]:
    """Shape 2: no API access (no token mounted), ingress from one app, egress to another and a subnet."""
    return access_policy(
        namespace,
        name,
        {
            "network": {
                "ingress": [{"from": [{"app": "frontend"}], "ports": [{"port": 8080}]}],
                "egress": [
                    {"to": [{"app": "db"}], "ports": [{"port": 5432}]},
                    {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 443}]},
                ],
                "dns": True,
            }
        },
    )


def wide_policy(namespace: str, name: str) -> dict[str, Any]:
    """Shape 3: a controller's several rules, API server reachable, several ports."""
    return access_policy(
        namespace,
        name,
        {
            "rbac": {
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [f"{name}-config"],
                        "verbs": ["get"],
                    },
                    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "verbs": ["get", "create", "update"],
                    },
                ]
            },
            "network": {
                "ingress": [
                    {
                        "from": [{"app": "frontend"}, {"namespace": "monitoring"}],
                        "ports": [{"port": 8080}, {"port": 9090}],
                    }
                ],
                "egress": [{"to": [{"app": "cache"}], "ports": [{"port": 6379}, {"port": 6380}]}],
                "dns": True,
                "kubeAPIServer": True,
            },
        },
    )


@dataclass(frozen=True)
class Profile:
    name: str
    build: Callable[[dict[str, int]], list[dict[str, Any]]]
    report_crds: bool  # installed as the chart installs them (reports on, the default), or absent
    pods: bool  # Deployments have a replica: wait for the controller-manager's ReplicaSets and Pods
    churn: bool  # workload status updates from the operator's start to the end
    probe_policy_step: int  # the converge probe patches policies 0, step, 2*step...: shapes with one rbac rule


PROFILES = {
    "light": Profile("light", light_population, report_crds=False, pods=False, churn=False, probe_policy_step=1),
    "realistic": Profile(
        "realistic", realistic_population, report_crds=True, pods=True, churn=True, probe_policy_step=3
    ),
}


# Measuring --------------------------------------------------------------------------------------


def populate(api: Any, objects: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] != "Namespace"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda o: resources.create(api, o), namespaces))
        list(pool.map(lambda o: resources.create(api, o), rest))
    return time.monotonic() - started


def wait_for_pods(api: Any, deployments: int, timeout: float) -> tuple[float, int]:
    """Until the controller-manager has made a ReplicaSet and a Pod per Deployment and reported every Deployment's
    status (its writes would otherwise fall into the operator's start). Returns (seconds, pods)."""
    started = time.monotonic()
    pods = 0
    while time.monotonic() - started < timeout:
        pods = sum(1 for _ in resources.list_objects(api, "v1", "Pod"))
        if pods >= deployments:
            settled = all(
                (d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation")
                and (d.get("status") or {}).get("replicas") == 1
                for d in resources.list_objects(api, "apps/v1", "Deployment")
            )
            if settled:
                break
        time.sleep(2.0)
    return time.monotonic() - started, pods


def floor_seconds(api: Any) -> tuple[float, int]:
    """One bare paged LIST of every kind the operator watches (the same selectors)."""
    started = time.monotonic()
    count = 0
    for spec in WATCHED_KINDS:
        try:
            count += sum(
                1 for _ in resources.list_objects(api, spec.api_version, spec.kind, label_selector=spec.label_selector)
            )
        except Exception:  # a kind not served here (optional): nothing to list
            continue
    return time.monotonic() - started, count


def apply_floor(api: Any, count: int, namespaces: int) -> float:
    """Seconds for `count` server-side applies of small ConfigMaps (16 threads): what writing costs here."""

    def one(i: int) -> None:
        ns = f"ns-{i % namespaces:05d}"
        resources.apply(
            api,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"floor-{i}", "namespace": ns},
                "data": {"k": "v"},
            },
        )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def violations(port: int, rule_id: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("access_hygiene_violations{") and f'rule_id="{rule_id}"' in line
    )


def active_findings(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("access_hygiene_violations{")
    )


def memory_mib(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process (VmRSS, VmHWM), from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def control_plane_cpu(control_plane: ControlPlane) -> float:
    """CPU seconds of kube-apiserver and etcd so far."""
    return sum(
        cpu_seconds(p.popen.pid)
        for p in control_plane._processes
        if p.name in ("kube-apiserver", "etcd") and p.popen.poll() is None
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ready_counts(api: Any) -> tuple[int, int]:
    ready = total = 0
    for obj in resources.list_objects(api, "accesshygiene.io/v1alpha1", "AccessPolicy"):
        total += 1
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready += any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready, total


def fixed_namespaces(api: Any) -> int:
    """Namespaces whose `default` ServiceAccount the operator fixed. Selected by the API server (2,000 objects, not
    all 12,000 ServiceAccounts decoded here every second: the probe must not load what it measures)."""
    fixed = 0
    token = ""
    while True:
        query = {"limit": "500", "fieldSelector": "metadata.name=default", **({"continue": token} if token else {})}
        page = resources.request(api, "GET", "/api/v1/serviceaccounts", query=query)
        fixed += sum(
            1
            for sa in page.get("items") or []
            if sa["metadata"]["namespace"].startswith("ns-") and sa.get("automountServiceAccountToken") is False
        )
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return fixed


def audit_requests(
    audit_log: Path, since: float, until: float, user: str = OPERATOR_USER, detail: bool = False
) -> Counter[str]:
    """A user's requests in the window, by verb (detail: by verb, resource and client: kopf or ours)."""
    verbs: Counter[str] = Counter()
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event["user"]["username"] != user:
                continue
            stamp = event["requestReceivedTimestamp"]
            when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if since <= when <= until:
                client = "kopf" if str(event.get("userAgent", "")).startswith("kopf") else "access-hygiene"
                resource = (event.get("objectRef") or {}).get("resource", "")
                subresource = (event.get("objectRef") or {}).get("subresource", "")
                resource = f"{resource}/{subresource}" if subresource else resource
                verbs[f"{event['verb']} {resource} ({client})" if detail else event["verb"]] += 1
    return verbs


@dataclass(frozen=True)
class Write:
    """One write request of the operator, from the audit log (Metadata level: which object, not the body)."""

    verb: str
    api_version: str  # group/version ("v1" for the core group)
    resource: str
    namespace: str
    name: str


def operator_writes(audit_log: Path, since: float, until: float, user: str = OPERATOR_USER) -> list[Write]:
    writes = []
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event["user"]["username"] != user:
                continue
            if event["verb"] not in WRITE_VERBS:
                continue
            stamp = event["requestReceivedTimestamp"]
            when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if since <= when <= until:
                ref = event.get("objectRef") or {}
                group, version = ref.get("apiGroup", ""), ref.get("apiVersion", "v1")
                writes.append(
                    Write(
                        event["verb"],
                        f"{group}/{version}" if group else version,
                        ref.get("resource", ""),
                        ref.get("namespace", ""),
                        ref.get("name", ""),
                    )
                )
    return writes


KIND_OF_RESOURCE = {(t.api_version, t.plural): t for t in [*resources.RESOURCE_TYPES.values(), *REPORT_TYPES.values()]}
FLOOR_MANAGER = "live-scale-floor"
FLOOR_ANNOTATION = "bench.accesshygiene.io/floor"


def replay_floor(api: Any, writes: list[Write]) -> tuple[float, Counter[str]]:
    """The operator's own writes again, bare, from 16 threads, in the order it made them: each a server-side apply
    (another field manager) of one annotation on the very object it wrote or created (a status write: on the object
    itself), so the API server decodes, admits, stores and announces objects of the same kinds and sizes. Run with
    the operator stopped (no watch of its own to feed, no reaction). Returns the seconds and what was replayed."""
    replayed: Counter[str] = Counter()

    def one(item: tuple[int, Write]) -> None:
        i, write = item
        rtype = KIND_OF_RESOURCE.get((write.api_version, write.resource))
        if rtype is None or not write.name:
            replayed[f"skipped {write.verb} {write.resource}"] += 1
            return
        namespace = write.namespace if rtype.namespaced else ""
        manifest = {
            "apiVersion": rtype.api_version,
            "kind": rtype.kind,
            "metadata": {
                "name": write.name,
                **({"namespace": namespace} if namespace else {}),
                "annotations": {FLOOR_ANNOTATION: str(i)},
            },
        }
        query = {"fieldManager": FLOOR_MANAGER, "force": "true"}
        try:
            resources.request(
                api,
                "PATCH",
                rtype.path(namespace, write.name),
                query=query,
                body=manifest,
                content_type="application/apply-patch+yaml",
            )
            replayed[f"{write.verb} {write.resource}"] += 1
        except Exception as error:  # gone since (a deleted object): counted
            replayed[f"failed {write.verb} {write.resource} ({type(error).__name__})"] += 1

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, enumerate(writes)))
    return time.monotonic() - started, replayed


class StatusChurn:
    """Workload status that keeps changing, as on a cluster whose Pods cannot be scheduled: a Deployment's
    Progressing condition and a Pending Pod's PodScheduled condition, rewritten in turn at a steady rate. Nothing
    the rules read changes."""

    def __init__(self, kubeconfig: str, workloads: list[tuple[str, str, str]], per_second: float) -> None:
        self.kubeconfig = kubeconfig
        self.workloads = workloads  # (kind, namespace, name)
        self.per_second = per_second
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-churn", daemon=True)

    def start(self) -> None:
        if self.workloads and self.per_second > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        with make_api_client(self.kubeconfig) as api:
            i = 0
            while not self._stop.wait(1.0 / self.per_second):
                kind, namespace, name = self.workloads[i % len(self.workloads)]
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                if kind == "Deployment":
                    condition = {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}" has timed out progressing ({i}).',
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    }
                    body = {"status": {"conditions": [condition]}}
                    api_version = "apps/v1"
                else:
                    condition = {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": f"0/0 nodes are available: attempt {i}.",
                        "lastProbeTime": now,
                        "lastTransitionTime": now,
                    }
                    body = {"status": {"conditions": [condition]}}
                    api_version = "v1"
                try:
                    resources.patch_merge(api, api_version, kind, name, body, namespace, "status")
                    self.done += 1
                except Exception as error:  # a workload gone or a conflict: the churn goes on
                    print(f"  (churn: {kind} {namespace}/{name}: {type(error).__name__})", flush=True)
                i += 1


class Sampler:
    """py-spy (PyPI) recording the operator for one phase, collapsed stacks (--py-spy DIR); nothing without it."""

    def __init__(self, directory: Path | None, pid: int, phase: str) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        py_spy = py_spy_binary()
        output = directory / f"{phase}.txt"
        command = [str(py_spy), "record", "--pid", str(pid), "--rate", "50", "--nonblocking"]
        command += ["--format", "raw", "--output", str(output)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            self.process.wait(timeout=60)


@dataclass
class Figures:
    profile: str
    counts: dict[str, int]
    objects: int = 0
    pods: int = 0
    floor: float = 0.0
    floor_objects: int = 0
    ready: float = 0.0
    fixed: float = 0.0
    writes: int = 0
    write_floor: float = 0.0
    findings: float = 0.0
    finding_post_start: list[float] = field(default_factory=list)
    post_start_writes: int = 0
    finding_settled: list[float] = field(default_factory=list)
    converge: list[float] = field(default_factory=list)
    idle_seconds: float = 0.0
    idle_cpu: float = 0.0
    idle_requests: dict[str, int] = field(default_factory=dict)
    idle_churn: int = 0
    rss_converged: float = 0.0
    rss_end: float = 0.0
    rss_peak: float = 0.0
    operator_cpu_total: float = 0.0
    # CPU seconds from the operator's start to all Ready (the operator; kube-apiserver + etcd): on a machine where the
    # operator and the control plane share the cores, what the operator burns the API server cannot use.
    start_cpu: float = 0.0
    start_control_plane_cpu: float = 0.0
    write_floor_control_plane_cpu: float = 0.0
    # The like-for-like write floor: the operator's own start-up writes replayed bare (replay_floor).
    start_writes: list[Write] = field(default_factory=list)
    start_requests: dict[str, int] = field(default_factory=dict)
    replay_floor: float = 0.0
    replay_floor_control_plane_cpu: float = 0.0


def finding_sample(api: Any, port: int, name: str) -> float:
    before = violations(port, "AH-RBAC-001")
    t0 = time.monotonic()
    resources.create(
        api,
        {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "ns-00000"}],
        },
    )
    while violations(port, "AH-RBAC-001") <= before:
        time.sleep(POLL_SECONDS)
    return time.monotonic() - t0


def run_profile(profile: Profile, args: argparse.Namespace) -> Figures:
    counts = {k: max(1, int(v * args.scale)) for k, v in SCALE.items()}
    figures = Figures(profile.name, counts)
    print(f"== profile {profile.name}, scale {args.scale}: {counts}", flush=True)
    # The controller-manager's client defaults to 20 requests a second: 2,000 Deployments' ReplicaSets, Pods and
    # statuses would take ~7 minutes to appear. A real cluster has them already; only the setup is sped up.
    fast_setup = (
        "--kube-api-qps=300",
        "--kube-api-burst=600",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
    )
    with (
        ControlPlane(audit_log=True, controller_manager_args=fast_setup) as control_plane,
        # Room for the floors' 16 threads: the default pool (cores x 5 = 10) reconnects (TLS) for every request beyond.
        with_pool_size(make_api_client(str(control_plane.kubeconfig)), 32) as api,
    ):
        install_prerequisites(api, OperatorSettings().grant_ceiling_cluster_role)
        if profile.report_crds:
            print(f"  report CRDs installed: {install_report_crds(api, report_crd_paths())}", flush=True)
        objects = profile.build(counts)
        figures.objects = len(objects)
        seconds = populate(api, objects)
        print(f"  populated {len(objects)} objects in {seconds:.1f}s", flush=True)
        if profile.pods:
            seconds, figures.pods = wait_for_pods(api, counts["deployments"], timeout=1800)
            print(
                f"  controller-manager: {figures.pods} Pods (Pending) and Deployment status after {seconds:.0f}s",
                flush=True,
            )
        floors = [floor_seconds(api) for _ in range(3)]
        figures.floor = statistics.median(f[0] for f in floors)
        figures.floor_objects = floors[0][1]
        print(
            f"  floor: bare paged LIST of {figures.floor_objects} objects: {figures.floor:.2f}s (median of 3)",
            flush=True,
        )

        churn = StatusChurn(
            str(control_plane.kubeconfig), churn_targets(api) if profile.churn else [], args.churn_per_second
        )
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(control_plane.operator_kubeconfig),
            "PYTHONPATH": str(ROOT / "operator"),
            "ACCESS_HYGIENE_MODE": "enforce",
            "ACCESS_HYGIENE_METRICS_PORT": str(port),
            "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
            "ACCESS_HYGIENE_OPERATOR_NAMESPACE": "access-hygiene",
        }
        log = control_plane.audit_log_path.parent / "operator.log"
        command = [
            sys.executable,
            *shlex.split(args.python_args),
            "-m",
            "access_hygiene.cli.main",
            "run",
            "--liveness",
            "",
        ]
        started_wall = time.time()
        started = time.monotonic()
        with log.open("w") as out:
            operator = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        churn.start()
        args.sampler = Sampler(args.py_spy and Path(args.py_spy) / profile.name, operator.pid, "start")
        try:
            measure(
                api, control_plane, operator, port, profile, counts, figures, churn, started, started_wall, args, log
            )
        finally:
            args.sampler.stop()
            churn.stop()
            figures.operator_cpu_total = cpu_seconds(operator.pid) if operator.poll() is None else 0.0
            operator.terminate()
            operator.wait(timeout=30)
            keep = Path(os.environ.get("TMPDIR", "/tmp")) / f"live_scale_operator_{profile.name}.log"
            keep.write_text(log.read_text())
            print(f"  operator log kept at {keep}", flush=True)
        if figures.start_writes:
            cpu_from = control_plane_cpu(control_plane)
            figures.replay_floor, replayed = replay_floor(api, figures.start_writes)
            figures.replay_floor_control_plane_cpu = control_plane_cpu(control_plane) - cpu_from
            print(
                f"  like-for-like write floor (the operator stopped): its {len(figures.start_writes)} start-up writes "
                f"replayed bare on the same objects from 16 threads: {figures.replay_floor:.1f}s, kube-apiserver + "
                f"etcd {figures.replay_floor_control_plane_cpu:.1f} CPU-s ({dict(replayed)})",
                flush=True,
            )
    return figures


def churn_targets(api: Any) -> list[tuple[str, str, str]]:
    deployments = [
        ("Deployment", d["metadata"]["namespace"], d["metadata"]["name"])
        for d in resources.list_objects(api, "apps/v1", "Deployment")
    ]
    pods = [
        ("Pod", p["metadata"]["namespace"], p["metadata"]["name"]) for p in resources.list_objects(api, "v1", "Pod")
    ]
    mixed = [item for pair in zip(deployments, pods, strict=False) for item in pair]
    return mixed or deployments


def measure(
    api: Any,
    control_plane: ControlPlane,
    operator: "subprocess.Popen[bytes]",
    port: int,
    profile: Profile,
    counts: dict[str, int],
    figures: Figures,
    churn: StatusChurn,
    started: float,
    started_wall: float,
    args: argparse.Namespace,
    log: Path,
) -> None:
    all_ready = all_fixed = None
    control_plane_from = control_plane_cpu(control_plane)
    while all_ready is None or all_fixed is None:
        time.sleep(1.0)
        if operator.poll() is not None:
            raise SystemExit(f"operator exited: {log.read_text()[-3000:]}")
        if all_ready is None:
            ready, total = ready_counts(api)
            if ready == total == counts["accesspolicies"]:
                all_ready = time.monotonic() - started
                figures.start_cpu = cpu_seconds(operator.pid)
                figures.start_control_plane_cpu = control_plane_cpu(control_plane) - control_plane_from
        if all_fixed is None and fixed_namespaces(api) >= counts["namespaces"]:
            all_fixed = time.monotonic() - started
    figures.ready, figures.fixed = all_ready, all_fixed
    args.sampler.stop()
    args.sampler = Sampler(args.py_spy and Path(args.py_spy) / profile.name, operator.pid, "post-start")
    converged_wall = time.time()
    print(f"  start -> all {counts['accesspolicies']} AccessPolicies Ready: {all_ready:.1f}s", flush=True)
    print(f"  start -> all {counts['namespaces']} namespaces fixed: {all_fixed:.1f}s", flush=True)
    print(
        f"  CPU from start to all Ready: operator {figures.start_cpu:.1f} s, kube-apiserver + etcd "
        f"{figures.start_control_plane_cpu:.1f} s (of {all_ready * (os.cpu_count() or 1):.0f} core-seconds)",
        flush=True,
    )

    # Post-start: the operator may still be writing (statuses, summaries, reports); fresh events must not wait.
    post_from = time.time()
    post_deadline = time.monotonic() + POST_START_WINDOW_SECONDS
    while len(figures.finding_post_start) < args.samples and time.monotonic() < post_deadline:
        figures.finding_post_start.append(
            finding_sample(api, port, f"bench-post-{len(figures.finding_post_start):03d}")
        )
    post_to = time.time()
    args.sampler.stop()
    figures.rss_converged = memory_mib(operator.pid)[0]
    time.sleep(2)  # the audit log is written asynchronously
    post_writes = audit_requests(control_plane.audit_log_path, post_from, post_to)
    figures.post_start_writes = sum(n for verb, n in post_writes.items() if verb in WRITE_VERBS)
    print(
        f"  event -> finding right after start-up: p50 {percentile(figures.finding_post_start, 0.5) * 1000:.0f} ms, "
        f"max {max(figures.finding_post_start) * 1000:.0f} ms over {len(figures.finding_post_start)} samples, "
        f"while the operator wrote {figures.post_start_writes} times",
        flush=True,
    )
    writes = audit_requests(control_plane.audit_log_path, started_wall - 1, converged_wall)
    figures.writes = sum(n for verb, n in writes.items() if verb in WRITE_VERBS)
    figures.start_writes = operator_writes(control_plane.audit_log_path, started_wall - 1, converged_wall)
    figures.start_requests = dict(
        audit_requests(control_plane.audit_log_path, started_wall - 1, converged_wall, detail=True)
    )
    print(
        "  the operator's requests from start to converged, by verb and resource: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(figures.start_requests.items(), key=lambda kv: -kv[1])),
        flush=True,
    )
    floor_cpu_from = control_plane_cpu(control_plane)
    figures.write_floor = apply_floor(api, figures.writes, counts["namespaces"])
    figures.write_floor_control_plane_cpu = control_plane_cpu(control_plane) - floor_cpu_from
    print(
        f"  the operator wrote {figures.writes} times to converge ({dict(writes)}); as many bare server-side "
        f"applies from 16 threads: {figures.write_floor:.1f}s",
        flush=True,
    )
    time.sleep(5)
    figures.findings = active_findings(port)
    for i in range(args.samples):
        figures.finding_settled.append(finding_sample(api, port, f"bench-admin-{i:03d}"))
    print(
        f"  event -> finding settled: p50 {percentile(figures.finding_settled, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(figures.finding_settled, 0.99) * 1000:.0f} ms over {len(figures.finding_settled)} samples",
        flush=True,
    )
    for i in range(0, counts["accesspolicies"], profile.probe_policy_step):
        if len(figures.converge) >= args.samples:
            break
        ns, name = f"ns-{i % counts['namespaces']:05d}", f"ap-{i:05d}"
        verbs = ["get", "list"] if len(figures.converge) % 2 == 0 else ["get", "watch"]
        t0 = time.monotonic()
        resources.request(
            api,
            "PATCH",
            f"/apis/accesshygiene.io/v1alpha1/namespaces/{ns}/accesspolicies/{name}",
            body=[{"op": "replace", "path": "/spec/rbac/rules/0/verbs", "value": verbs}],
            content_type="application/json-patch+json",
        )
        while True:
            role = resources.get(api, RBAC, "Role", f"access-hygiene-{name}", ns)
            if role and sorted(role["rules"][0]["verbs"]) == sorted(verbs):
                break
            time.sleep(POLL_SECONDS)
        figures.converge.append(time.monotonic() - t0)
    print(
        f"  event -> converged (AccessPolicy rules -> Role): p50 {percentile(figures.converge, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(figures.converge, 0.99) * 1000:.0f} ms over {len(figures.converge)} samples",
        flush=True,
    )

    time.sleep(5)
    args.sampler = Sampler(args.py_spy and Path(args.py_spy) / profile.name, operator.pid, "idle")
    idle_from, cpu_from, churn_from = time.time(), cpu_seconds(operator.pid), churn.done
    time.sleep(args.idle_seconds)
    idle_to, cpu_to, churn_to = time.time(), cpu_seconds(operator.pid), churn.done
    args.sampler.stop()
    figures.idle_seconds = idle_to - idle_from
    figures.idle_cpu = cpu_to - cpu_from
    figures.idle_churn = churn_to - churn_from
    time.sleep(2)
    figures.idle_requests = dict(audit_requests(control_plane.audit_log_path, idle_from, idle_to, detail=True))
    print(
        f"  idle {figures.idle_seconds:.0f}s with {figures.idle_churn} workload status updates: operator CPU "
        f"{figures.idle_cpu:.2f}s; its API requests: {figures.idle_requests or 'none'}",
        flush=True,
    )
    figures.rss_end, figures.rss_peak = memory_mib(operator.pid)
    print(
        f"  operator RSS once converged {figures.rss_converged:.0f} MiB, at the end {figures.rss_end:.0f} MiB, "
        f"peak {figures.rss_peak:.0f} MiB",
        flush=True,
    )


def table(results: list[Figures]) -> str:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:,.0f}" if values else "-"

    def requests(f: Figures) -> str:
        lists = sum(n for k, n in f.idle_requests.items() if k.startswith("list "))
        writes = sum(n for k, n in f.idle_requests.items() if k.split(" ", 1)[0] in WRITE_VERBS)
        watches = sum(n for k, n in f.idle_requests.items() if k.startswith("watch "))
        return f"{lists} LIST, {writes} writes, {watches} watch"

    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("objects created (+ Pods the controller-manager made)", lambda f: f"{f.objects:,} (+{f.pods:,})"),
        (
            "floor: bare paged LIST of what the operator watches",
            lambda f: f"{f.floor:.2f} s ({f.floor_objects:,} objects)",
        ),
        ("start -> all AccessPolicies Ready", lambda f: f"{f.ready:.1f} s"),
        ("start -> all namespaces fixed", lambda f: f"{f.fixed:.1f} s"),
        (
            "writes to converge / their floor (bare applies, 16 threads)",
            lambda f: f"{f.writes:,} / {f.write_floor:.1f} s",
        ),
        (
            "CPU-s from start to all Ready: operator / kube-apiserver + etcd (write floor: kube-apiserver + etcd)",
            lambda f: f"{f.start_cpu:.1f} / {f.start_control_plane_cpu:.1f} ({f.write_floor_control_plane_cpu:.1f})",
        ),
        ("all Ready against LIST + write floor", lambda f: f"{f.ready / max(f.floor + f.write_floor, 1e-9):.1f}x"),
        (
            "namespaces fixed against LIST + write floor",
            lambda f: f"{f.fixed / max(f.floor + f.write_floor, 1e-9):.1f}x",
        ),
        (
            "like-for-like write floor: its writes replayed bare on its objects (kube-apiserver + etcd CPU-s)",
            lambda f: f"{f.replay_floor:.1f} s ({f.replay_floor_control_plane_cpu:.1f})",
        ),
        (
            "all Ready / namespaces fixed against LIST + like-for-like write floor",
            lambda f: (
                f"{f.ready / max(f.floor + f.replay_floor, 1e-9):.1f}x / "
                f"{f.fixed / max(f.floor + f.replay_floor, 1e-9):.1f}x"
            ),
        ),
        ("active findings in /metrics", lambda f: f"{f.findings:,.0f}"),
        (
            "event -> finding right after start-up, p50 / max (operator writes meanwhile)",
            lambda f: (
                f"{ms(f.finding_post_start, 0.5)} / {ms(f.finding_post_start, 1.0)} ms "
                f"({len(f.finding_post_start)} samples; {f.post_start_writes:,} writes)"
            ),
        ),
        (
            "event -> finding settled, p50 / p99",
            lambda f: f"{ms(f.finding_settled, 0.5)} / {ms(f.finding_settled, 0.99)} ms ({len(f.finding_settled)})",
        ),
        (
            "event -> converged, p50 / p99",
            lambda f: f"{ms(f.converge, 0.5)} / {ms(f.converge, 0.99)} ms ({len(f.converge)})",
        ),
        ("idle: workload status updates in the window", lambda f: f"{f.idle_churn:,} in {f.idle_seconds:.0f} s"),
        ("idle: operator CPU", lambda f: f"{f.idle_cpu:.2f} CPU-s"),
        ("idle: operator API requests", requests),
        (
            "operator RSS once converged / end / peak",
            lambda f: f"{f.rss_converged:.0f} / {f.rss_end:.0f} / {f.rss_peak:.0f} MiB",
        ),
    ]
    lines = [
        "| figure | " + " | ".join(f.profile for f in results) + " |",
        "| --- |" + " --- |" * len(results),
    ]
    lines += [f"| {label} | " + " | ".join(value(f) for f in results) + " |" for label, value in rows]
    return "\n".join(lines)


def py_spy_binary() -> Path:
    return Path(sys.executable).parent / "py-spy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("realistic", "light", "both"), default="both")
    parser.add_argument("--scale", "--factor", type=float, default=1.0, help="scale every count by this fraction")
    parser.add_argument("--samples", type=int, default=50, help="samples per latency figure")
    parser.add_argument("--idle-seconds", type=float, default=600)
    parser.add_argument(
        "--churn-per-second", type=float, default=4.0, help="workload status updates a second (realistic profile)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record the operator with py-spy (pip install py-spy) into DIR/PROFILE/{start,post-start,idle}.txt",
    )
    parser.add_argument(
        "--python-args", default="", help="interpreter arguments for the operator, e.g. '-m memray run -o out.bin'"
    )
    args = parser.parse_args()
    if args.py_spy and not py_spy_binary().exists():  # before the populations, not after minutes of them
        parser.error(f"--py-spy needs {py_spy_binary()} (pip install py-spy)")
    chosen = ["light", "realistic"] if args.profile == "both" else [args.profile]
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True
    )
    results = [run_profile(PROFILES[name], args) for name in chosen]
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table(results))


if __name__ == "__main__":
    main()
