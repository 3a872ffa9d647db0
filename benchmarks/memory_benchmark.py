"""Where the operator's memory goes on the realistic population, in-process (no control plane). Prints figures;
asserts nothing.

    python benchmarks/memory_benchmark.py                  # full scale, tracemalloc on (a few minutes)
    python benchmarks/memory_benchmark.py --rss-only       # VmRSS without tracemalloc's overhead
    python benchmarks/memory_benchmark.py --scale 0.1      # development
    python benchmarks/memory_benchmark.py --profile light  # live_scale.py's other population

The population is benchmarks/live_scale.py's realistic one (or --profile light), shaped as the API server serves
it (uid, resourceVersion, managedFields, defaulted pod specs, the controller-manager's ReplicaSets and Pending Pods with
their token volume, the control plane's default ServiceAccounts and bootstrap RBAC, the objects the operator
generates for each AccessPolicy and namespace, policy status), serialised to JSON pages and fed through the watch
cache's own preparation (k8s/watch_cache.py: trim, shared values; --threads: a thread per kind, as the reflectors
run) into a ClusterState. Then what the controller
does at start (k8s/controller.py): the full audit (engine/audit/incremental.py), the Events' seed, a publish and
the metrics' families (metrics.py), the policy reports written (k8s/reports.py, the API a stand-in that keeps what
was written compressed), re-audits as events cause them (--events), status writes to every policy
(--policy-writes) and the release of freed memory the controller makes once its queue drains. Prints:
- VmRSS after each stage (the operator's RSS once converged is what the live benchmark reports);
- MiB per holder: what each long-lived structure reaches (sys.getsizeof over gc.get_referents), each object
  counted once, for the first holder that reaches it in the order printed;
- with tracemalloc: the peak of each stage and the largest allocation sites still held, by file:line.
"""

import argparse
import gc
import hashlib
import json
import sys
import threading
import time
import tracemalloc
import types
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import live_scale  # noqa: E402
from report_writer_memory import FakeApi  # noqa: E402

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE  # noqa: E402
from access_hygiene.engine.audit.incremental import CLUSTER, IncrementalAudit, scoped_snapshot  # noqa: E402
from access_hygiene.engine.catalogue import governance  # noqa: E402
from access_hygiene.engine.ground.namespace_classes import namespace_classes  # noqa: E402
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, name_of  # noqa: E402
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles  # noqa: E402
from access_hygiene.k8s import reports as reports_module  # noqa: E402
from access_hygiene.k8s.controller import WATCHED_KINDS  # noqa: E402
from access_hygiene.k8s.events import EventRecorder  # noqa: E402
from access_hygiene.k8s.memory import release_free_memory  # noqa: E402
from access_hygiene.k8s.reports import ReportWriter  # noqa: E402
from access_hygiene.k8s.watch_cache import Change, ClusterState, Reflector  # noqa: E402
from access_hygiene.metrics import Metrics, ScanResult  # noqa: E402
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy  # noqa: E402
from access_hygiene.render.namespace import render_namespace_controls  # noqa: E402
from access_hygiene.render.policy import ClusterFacts, render_policy  # noqa: E402
from access_hygiene.settings import OperatorSettings  # noqa: E402

Obj = dict[str, Any]
NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
STAMP = "2026-12-07T01:40:00Z"
PAGE = 500
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "access-hygiene")
TOKEN_VOLUME = "kube-api-access-x7k2p"


# The population as the API server serves it ------------------------------------------------------------------


class Served:
    """Adds what kube-apiserver and the controllers add to an object: identity, versions, managedFields,
    defaults."""

    def __init__(self) -> None:
        self.counter = 0

    def uid(self, seed: str) -> str:
        digest = hashlib.md5(seed.encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    def metadata(self, obj: Obj, manager: str = "kubectl", generation: bool = False) -> Obj:
        self.counter += 1
        metadata = obj["metadata"]
        metadata["uid"] = self.uid(f"{obj['kind']}/{metadata.get('namespace', '')}/{metadata['name']}")
        metadata["resourceVersion"] = str(100000 + self.counter)
        metadata["creationTimestamp"] = STAMP
        if generation:
            metadata["generation"] = 1
        fields = {f"f:{key}": {} for key in obj if key not in ("apiVersion", "kind", "metadata", "status")}
        metadata["managedFields"] = [
            {
                "manager": manager,
                "operation": "Apply" if manager == "access-hygiene" else "Update",
                "apiVersion": obj["apiVersion"],
                "time": STAMP,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}, **fields},
            }
        ]
        return obj


def container_defaults(container: Obj) -> Obj:
    return {
        **container,
        "ports": [{**port, "protocol": "TCP"} for port in container.get("ports") or []],
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "Always",
    }


def pod_spec_defaults(spec: Obj) -> Obj:
    return {
        **spec,
        "containers": [container_defaults(c) for c in spec["containers"]],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": spec.get("securityContext") or {},
        "schedulerName": "default-scheduler",
    }


def token_volume() -> Obj:
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
            "defaultMode": 420,
        },
    }


def workload_objects(served: Served, deployment: Obj, index: int) -> Iterator[Obj]:
    """The Deployment as stored, its ReplicaSet and its Pending Pod (what the controller-manager makes)."""
    metadata, spec = deployment["metadata"], deployment["spec"]
    name, namespace = metadata["name"], metadata["namespace"]
    template_spec = pod_spec_defaults(spec["template"]["spec"])
    metadata["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    deployment["spec"] = {
        **spec,
        "template": {
            "metadata": {"creationTimestamp": None, "labels": spec["template"]["metadata"]["labels"]},
            "spec": template_spec,
        },
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
    }
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "unavailableReplicas": 1,
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "lastUpdateTime": STAMP,
                "lastTransitionTime": STAMP,
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "False",
                "lastUpdateTime": STAMP,
                "lastTransitionTime": STAMP,
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}-7d9f8c6b5" has timed out progressing.',
            },
        ],
    }
    yield served.metadata(deployment, manager="kube-controller-manager", generation=True)
    pod_hash = f"{index % 9999:04d}bc6d"
    labels = {**spec["template"]["metadata"]["labels"], "pod-template-hash": pod_hash}
    replica_set_name = f"{name}-{pod_hash}"
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": metadata["uid"],
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": replica_set_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": "1",
                "deployment.kubernetes.io/max-replicas": "2",
                "deployment.kubernetes.io/revision": "1",
            },
            "ownerReferences": [owner],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"creationTimestamp": None, "labels": labels}, "spec": template_spec},
        },
        "status": {"replicas": 1, "fullyLabeledReplicas": 1, "observedGeneration": 1},
    }
    yield served.metadata(replica_set, manager="kube-controller-manager", generation=True)
    account = template_spec.get("serviceAccountName") or "default"
    pod_spec = {
        **template_spec,
        "volumes": [token_volume()],
        "containers": [
            {
                **c,
                "volumeMounts": [
                    {
                        "name": TOKEN_VOLUME,
                        "readOnly": True,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
            }
            for c in template_spec["containers"]
        ],
        "serviceAccountName": account,
        "serviceAccount": account,
        "tolerations": [
            {
                "key": f"node.kubernetes.io/{taint}",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
            for taint in ("not-ready", "unreachable")
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{replica_set_name}-{index % 99991:05d}x",
            "generateName": f"{replica_set_name}-",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    **owner,
                    "kind": "ReplicaSet",
                    "name": replica_set_name,
                    "uid": served.uid(f"ReplicaSet/{namespace}/{replica_set_name}"),
                }
            ],
        },
        "spec": pod_spec,
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": STAMP,
                    "reason": "Unschedulable",
                    "message": "0/0 nodes are available: no nodes available to schedule pods.",
                }
            ],
            "qosClass": "BestEffort",
        },
    }
    if spec["replicas"]:  # (the light profile's Deployments have none)
        yield served.metadata(pod, manager="kube-scheduler")


def policy_objects(served: Served, policy: Obj) -> Iterator[Obj]:
    """The AccessPolicy with the status the operator wrote, and what the operator generated for it."""
    served.metadata(policy, generation=True)
    metadata = policy["metadata"]
    metadata["finalizers"] = [f"{API_GROUP}/cleanup"]
    resolved = resolve_policy(metadata, AccessPolicySpec.model_validate(policy["spec"]))
    generated = render_policy(resolved, ClusterFacts(api_server_endpoints=(("10.96.0.1", 6443),)))
    policy["status"] = {
        "observedGeneration": 1,
        "mode": "enforce",
        "serviceAccount": resolved.service_account_name,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "observedGeneration": 1,
                "lastTransitionTime": STAMP,
            }
            for kind, reason, message in (
                ("Ready", "Reconciled", f"{len(generated)} object(s) in place."),
                ("Compliant", "NoFindings", "No finding about the objects of this policy."),
            )
        ],
        "generated": [
            {
                "apiVersion": g["apiVersion"],
                "kind": g["kind"],
                "name": g["metadata"]["name"],
                **({"namespace": g["metadata"]["namespace"]} if g["metadata"].get("namespace") else {}),
            }
            for g in generated
        ],
        "violations": 0,
    }
    yield policy
    for manifest in generated:
        yield served.metadata(manifest, manager="access-hygiene")


def namespace_objects(served: Served, namespace: Obj) -> Iterator[Obj]:
    """The Namespace as stored (with the operator's summary), its default ServiceAccount (patched by the operator)
    and the operator's two NetworkPolicies."""
    name = namespace["metadata"]["name"]
    namespace["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    namespace["metadata"]["annotations"] = {
        "accesshygiene.io/hygiene-summary": json.dumps(
            {"controls": {"default-deny": True, "dns-allow": True, "default-sa-token-off": True}, "exempt": False,
             "exempted": 0, "forecast": 0, "pending": 0, "score": 88, "v": 1,
             "violations": {"critical": 0, "high": 3, "low": 4, "medium": 12}},
            sort_keys=True, separators=(",", ":"),
        )
    }  # fmt: skip
    namespace["spec"] = {"finalizers": ["kubernetes"]}
    namespace["status"] = {"phase": "Active"}
    served.metadata(namespace)
    yield namespace
    default = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name},
               "automountServiceAccountToken": False}  # fmt: skip
    yield served.metadata(default, manager="access-hygiene")
    uid = namespace["metadata"]["uid"]
    for manifest in render_namespace_controls(name, uid, "kube-system", {"k8s-app": "kube-dns"}):
        yield served.metadata(manifest, manager="access-hygiene")


def system_objects(served: Served) -> Iterator[Obj]:
    """What a fresh control plane holds: system namespaces, the bootstrap ClusterRoles and ~50 bindings, the API
    server's EndpointSlice."""
    for name in SYSTEM_NAMESPACES:
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}  # fmt: skip
        yield served.metadata(namespace)
        yield served.metadata(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}
        )
    for role in bootstrap_cluster_roles():
        yield served.metadata(json.loads(json.dumps(role)), manager="kube-apiserver")
    for i, role in enumerate(bootstrap_cluster_roles()[:50]):
        name = name_of(role)
        subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User" if i % 2 else "Group", "name": name}
        binding = live_scale.cluster_role_binding(
            name, {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, [subject]
        )
        binding["metadata"]["labels"] = {"kubernetes.io/bootstrapping": "rbac-defaults"}
        binding["metadata"]["annotations"] = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        yield served.metadata(binding, manager="kube-apiserver")
    yield served.metadata(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.96.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }
    )


def served_population(scale: float, profile: str) -> Iterator[Obj]:
    """The profile's population (benchmarks/live_scale.py) at this scale, each object as the API server would
    serve it."""
    counts = {key: max(1, round(value * scale)) for key, value in live_scale.SCALE.items()}
    served = Served()
    yield from system_objects(served)
    for index, obj in enumerate(live_scale.PROFILES[profile].build(counts)):
        kind = obj["kind"]
        if kind == "Namespace":
            yield from namespace_objects(served, obj)
        elif kind == "Deployment":
            yield from workload_objects(served, obj, index)
        elif kind == "AccessPolicy":
            yield from policy_objects(served, obj)
        else:
            yield served.metadata(obj, generation=kind in ("ClusterRole", "Role"))


def json_pages(scale: float, profile: str) -> dict[str, list[bytes]]:
    """Every watched kind's LIST pages as the API server sends them (JSON bytes)."""
    by_kind: dict[str, list[Obj]] = {}
    for obj in served_population(scale, profile):
        by_kind.setdefault(obj["kind"], []).append(obj)
    pages: dict[str, list[bytes]] = {}
    for kind, items in by_kind.items():
        for start in range(0, len(items), PAGE):
            chunk = [
                {k: v for k, v in item.items() if k not in ("apiVersion", "kind")} for item in items[start:][:PAGE]
            ]
            pages.setdefault(kind, []).append(json.dumps({"kind": f"{kind}List", "items": chunk}).encode())
    return pages


# Measuring --------------------------------------------------------------------------------------------------


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, Enum)


def reachable_mib(roots: Iterable[Any], seen: set[int]) -> float:
    """sys.getsizeof over everything the roots reach (classes, modules, functions and enum members excluded),
    each object once: objects already in `seen` (reached by an earlier holder) are not counted again."""
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE) or obj is None:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total / 2**20


class Stages:
    def __init__(self, traced: bool) -> None:
        self.traced = traced
        self.rows: list[tuple[str, float, float, float, float, float]] = []

    def run(self, label: str, step: Callable[[], Any]) -> Any:
        gc.collect()
        if self.traced:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        started = time.process_time()
        value = step()
        seconds = time.process_time() - started
        gc.collect()
        held, peak = tracemalloc.get_traced_memory() if self.traced else (0, 0)
        grown, peaked = ((held - before) / 2**20, (peak - before) / 2**20) if self.traced else (0.0, 0.0)
        self.rows.append((label, seconds, rss_mib(), rss_mib("VmHWM"), grown, peaked))
        print(f"  {label:<44} {seconds:6.1f} CPU-s  VmRSS {rss_mib():6.0f} MiB", flush=True)
        return value

    def print(self) -> None:
        print("\n| stage | CPU s | VmRSS after | VmHWM | tracemalloc held +/peak + |")
        print("| --- | --- | --- | --- | --- |")
        for label, seconds, rss, hwm, grown, peaked in self.rows:
            traced = f"{grown:+.1f} / +{peaked:.1f} MiB" if self.traced else "(off)"
            print(f"| {label} | {seconds:.1f} | {rss:.0f} MiB | {hwm:.0f} MiB | {traced} |")


def load_cache(pages: dict[str, list[bytes]], threads: bool) -> tuple[ClusterState, list[Change], list[Reflector]]:
    """Each kind's pages parsed and prepared by the watch cache's own code (its reflectors, kept as the operator
    keeps them), then stored as its LIST would be; threads: each kind in a thread of its own, as the reflectors
    run (glibc gives each thread that allocates an arena of its own)."""
    specs = list(WATCHED_KINDS)
    state = ClusterState(specs, counted_label=(MANAGED_BY_LABEL, MANAGED_BY_VALUE))
    changes: list[Change] = []
    state.set_listener(changes.extend)
    reflectors = [Reflector(None, spec, state) for spec in specs]  # type: ignore[arg-type]  # _prepare only

    def relist(reflector: Reflector) -> None:
        kind_pages = pages.pop(reflector.spec.kind, [])  # consumed: the JSON is gone once stored, as after a LIST
        items = [reflector._prepare(item) for page in kind_pages for item in json.loads(page)["items"]]
        del kind_pages
        state.replace(reflector.spec.kind, items)

    if threads:
        running = [threading.Thread(target=relist, args=(reflector,)) for reflector in reflectors]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    else:
        for reflector in reflectors:
            relist(reflector)
    return state, changes, reflectors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--profile", choices=sorted(live_scale.PROFILES), default="realistic")
    parser.add_argument("--rss-only", action="store_true", help="no tracemalloc (it doubles the time): VmRSS only")
    parser.add_argument("--top", type=int, default=20, help="allocation sites to print (tracemalloc)")
    parser.add_argument("--threads", action="store_true", help="parse each kind in a thread, as the reflectors do")
    parser.add_argument("--policy-writes", type=int, default=3, help="status writes to every AccessPolicy")
    parser.add_argument("--events", type=int, default=20, help="re-audits after start, as events cause them")
    args = parser.parse_args(argv)
    traced = not args.rss_only
    settings = OperatorSettings()
    print(f"machine: load average {Path('/proc/loadavg').read_text().split()[:3]}; {args.profile}, scale {args.scale}")
    print(f"VmRSS after imports {rss_mib():.0f} MiB")
    pages = json_pages(args.scale, args.profile)
    page_bytes = sum(len(p) for kind_pages in pages.values() for p in kind_pages)
    objects = sum(len(json.loads(p)["items"]) for ps in pages.values() for p in ps)
    print(f"population: {objects} objects, {page_bytes / 2**20:.0f} MiB of JSON")
    gc.collect()
    if traced:
        tracemalloc.start(12)
    base = tracemalloc.take_snapshot() if traced else None
    stages = Stages(traced)
    state, changes, reflectors = stages.run("watch cache loaded (LIST pages)", lambda: load_cache(pages, args.threads))
    audit = IncrementalAudit()
    ctx = settings.audit_context(now=NOW)

    def initial_audit() -> None:
        for change in changes:
            audit.observe(change.kind, change.old, change.new)
        changes.clear()
        audit.full(state, ctx, state.snapshot())

    stages.run("initial audit (full)", initial_audit)
    totals = stages.run("totals", audit.totals)
    recorder = EventRecorder(None, clock=None)  # type: ignore[arg-type]  # never started: seed only
    stages.run("Events seeded", lambda: recorder.seed(totals.findings, lambda kind, ns, name: "uid"))
    metrics = Metrics(prebuild_after=None)

    def publish() -> None:
        by_scope = {scope: (result.findings, result.capabilities) for scope, result in audit.scopes.items()}
        classes = namespace_classes(ClusterSnapshot(namespaces=state.objects("Namespace")), ctx)
        metrics.publish_scan(
            ScanResult(findings=totals.findings, subject_capabilities=totals.capabilities,
                       namespace_controls=totals.controls, exemptions=totals.exemptions, namespace_classes=classes,
                       by_scope=by_scope, completed_at=NOW.timestamp(), duration_seconds=1.0)
        )  # fmt: skip
        assert metrics.state.snapshot is not None
        metrics.state.snapshot.families()

    stages.run("metrics published and built", publish)
    api = FakeApi()
    vars(reports_module)["request"] = api
    writer = ReportWriter(settings.report_max_results)
    writer.available = live_scale.PROFILES[args.profile].report_crds  # the light profile has no report CRDs
    stages.run("reports written (start-up sync)", lambda: writer.sync(None, totals.findings))  # type: ignore[arg-type]
    namespaces = sorted(name_of(ns) for ns in state.objects("Namespace"))

    def reaudit(scopes: set[str]) -> None:
        nonlocal totals
        snapshot = scoped_snapshot(state, audit.index, scopes)
        changed = audit.update(state, ctx, scopes, snapshot)
        if changed:
            totals = audit.totals()
        recorder.record([f for s in scopes for f in audit.findings_in(s)], lambda kind, ns, name: "uid", scopes)
        publish()
        writer.sync(None, totals.findings, changed)  # type: ignore[arg-type]

    def events() -> None:
        for number in range(args.events):
            scopes = {namespaces[(number * 97) % len(namespaces)]}
            reaudit(scopes | {CLUSTER} if number % 5 == 0 else scopes)

    def policy_writes() -> None:
        """What the operator's writes to its policies do (finalizer, status: a new resourceVersion each), followed
        by re-audits of the cluster scope, which reads every policy."""
        for round_number in range(args.policy_writes):
            for policy in state.objects("AccessPolicy"):
                metadata = {
                    **policy["metadata"],
                    "resourceVersion": f"{policy['metadata']['resourceVersion']}.{round_number}",
                }
                status = {**policy["status"], "violations": round_number + 1}
                written = {**policy, "metadata": metadata, "status": status}
                audit.observe("AccessPolicy", policy, written)  # (the cluster re-audit below reads every policy)
                state.upsert("AccessPolicy", written)
            reaudit({CLUSTER})

    stages.run(f"{args.events} re-audits (every 5th with the cluster scope)", events)
    stages.run(f"{args.policy_writes} status writes to every policy, cluster re-audits", policy_writes)
    after = tracemalloc.take_snapshot() if traced else None
    stages.print()
    gc.collect()
    before_trim = rss_mib()
    returned = release_free_memory()  # what the controller does once its queue drains (k8s/memory.py)
    print(f"\nVmRSS {before_trim:.0f} MiB; after malloc_trim(0) (pages returned: {returned}) {rss_mib():.0f} MiB")
    findings = totals.findings
    print(f"\nactive findings {sum(not f.exempted for f in findings)} (all {len(findings)}), capabilities "
          f"{len(totals.capabilities)}, scopes {len(audit.scopes)}, reports {len(writer._written or {})}")  # fmt: skip

    seen: set[int] = set()
    scope_results = list(audit.scopes.values())
    holders: list[tuple[str, Callable[[], Iterable[Any]]]] = [
        ("watch cache objects (ClusterState)", lambda: [state._objects]),
        ("watch cache: shared values (reflectors)", lambda: [vars(r).get("_shared") for r in reflectors]),
        ("findings (audit results by scope)", lambda: [r.findings for r in scope_results]),
        (
            "capabilities, controls, exemptions",
            lambda: [(r.capabilities, r.controls, r.exemptions) for r in scope_results],
        ),
        ("dependency index", lambda: [audit.index]),
        ("permission index kept across re-audits", lambda: [vars(audit).get("kept_permissions")]),
        ("audit totals (lists, controls)", lambda: [totals]),
        ("metrics: per-scope counts", lambda: [metrics._scope_counts]),
        ("metrics: published scan and families", lambda: [metrics.state]),
        ("Events: announced finding keys", lambda: [recorder._emitted, recorder._startup]),
        ("report writer: digests", lambda: [writer]),
        ("governance._RESOLVED (parsed policies)", lambda: [governance._RESOLVED]),
        ("bootstrap ClusterRoles (shipped data)", lambda: [bootstrap_cluster_roles()]),
    ]
    print("\n| holder | MiB |\n| --- | --- |")
    for label, roots in holders:
        print(f"| {label} | {reachable_mib(roots(), seen):.1f} |")
    if after is not None and base is not None:
        print(f"\nlargest allocation sites held at the end (top {args.top}, tracemalloc, grouped by file:line):")
        for stat in after.compare_to(base, "lineno")[: args.top]:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / 2**20:7.1f} MiB {stat.count_diff:>9} blocks  "
                  f"{frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno}")  # fmt: skip
        print(f"\nby traceback (top {min(args.top, 10)}; the access_hygiene frames, innermost first):")
        for stat in after.compare_to(base, "traceback")[: min(args.top, 10)]:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback if "access_hygiene" in f.filename]
            print(f"  {stat.size_diff / 2**20:7.1f} MiB  {' <- '.join(frames[::-1][:6])}")
    note = " (tracemalloc's own bookkeeping included: --rss-only for the process figure)" if traced else ""
    print(f"\nVmRSS at the end {rss_mib():.0f} MiB, VmHWM {rss_mib('VmHWM'):.0f} MiB{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
