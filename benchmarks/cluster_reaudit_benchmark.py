"""The cluster scope's re-audit after one ClusterRoleBinding change, in-process, on the realistic population.

    python benchmarks/cluster_reaudit_benchmark.py [--scale 1.0] [--changes 15] [--warmup 3] [--profile-rules]

Builds benchmarks/live_scale.py's realistic population (full scale: 2,000 namespaces, 12,000 ServiceAccounts with
the `default` ones, 5,000 Roles, 20,000 RoleBindings, ~570 ClusterRoles with the shipped default ones, ~1,050
ClusterRoleBindings with ~50 default ones, 1,000 AccessPolicies, a Pending Pod per Deployment) in the operator's
own watch cache (k8s/watch_cache.py's ClusterState, objects trimmed and their strings shared as the reflectors do),
runs the start-up audit, then times what the controller's `_reaudit` does after one ClusterRoleBinding change (the
live benchmark's probe: a `cluster-admin` ClusterRoleBinding to a ServiceAccount of ns-00000, created, then deleted
at the next step): the scopes it marks, their sub-snapshot and the re-audit (CPU time of this thread; the
publish, reports and Events are not included). Prints the median and the spread, and the part of it spent
building (or updating) the RBAC permission index. --profile-rules prints each rule's share of one re-audit.
Not a timed test: figures depend on the machine.
"""

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from live_scale import SCALE, realistic_population

from access_hygiene.clock import SYSTEM_CLOCK
from access_hygiene.engine.audit.incremental import IncrementalAudit, scoped_snapshot
from access_hygiene.engine.audit.runner import load_rules
from access_hygiene.engine.catalogue.registry import RULES
from access_hygiene.engine.ground.snapshot import name_of, namespace_of, trim_object
from access_hygiene.engine.rbac import permissions
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.k8s.controller import GC_THRESHOLDS, WATCHED_KINDS
from access_hygiene.k8s.events import EventRecorder
from access_hygiene.k8s.watch_cache import Change, ClusterState, _shared_strings
from access_hygiene.settings import OperatorSettings

RBAC = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
CONTROL_PLANE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def control_plane_objects(namespaces: list[str]) -> list[dict[str, Any]]:
    """What kube-apiserver and the controller-manager add: namespaces, a `default` ServiceAccount in each, the
    default ClusterRoles, ~50 default ClusterRoleBindings to system users and groups."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in CONTROL_PLANE_NAMESPACES
    ]
    for ns in (*namespaces, *CONTROL_PLANE_NAMESPACES):
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}})
    roles = [dict(role) for role in bootstrap_cluster_roles()]
    objects.extend(roles)
    for i, role in enumerate(role for role in roles if str(role["metadata"]["name"]).startswith("system:")):
        if i >= 50:
            break
        name = str(role["metadata"]["name"])
        subject = (
            {"apiGroup": RBAC_GROUP, "kind": "User", "name": name}
            if i % 3
            else {"kind": "ServiceAccount", "name": name.rsplit(":", 1)[-1], "namespace": "kube-system"}
        )
        objects.append(
            {
                "apiVersion": RBAC,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": BOOTSTRAP_LABELS},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": [subject],
            }
        )
    return objects


def pending_pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Pending Pod per Deployment with a replica (the controller-manager's; no node schedules it)."""
    pods: list[dict[str, Any]] = []
    for obj in objects:
        if obj["kind"] != "Deployment" or not obj["spec"].get("replicas"):
            continue
        metadata = obj["metadata"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{metadata['name']}-5d9c7b-x2k4q",
                    "namespace": metadata["namespace"],
                    "labels": dict(obj["spec"]["template"]["metadata"]["labels"]),
                },
                "spec": obj["spec"]["template"]["spec"],
                "status": {"phase": "Pending"},
            }
        )
    return pods


def as_cached(obj: dict[str, Any], serial: int) -> dict[str, Any]:
    """The object as the watch cache stores it: uid and resourceVersion set, trimmed, strings shared."""
    metadata = {**obj["metadata"], "uid": f"uid-{serial:08d}", "resourceVersion": str(serial)}
    shared: dict[str, Any] = _shared_strings(trim_object({**obj, "metadata": metadata}))
    return shared


def probe_binding(step: int, serial: int) -> dict[str, Any]:
    return as_cached(
        {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"probe-{step:03d}"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": f"probe-{step:03d}", "namespace": "ns-00000"}],
        },
        serial,
    )


def uid_of(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


class Timed:
    """Wraps a function and adds up the CPU time spent in it (outermost calls only)."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.original = module, name, getattr(module, name)
        self.seconds, self.depth = 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.depth += 1
        started = time.thread_time()
        try:
            return self.original(*args, **kwargs)
        finally:
            self.depth -= 1
            if not self.depth:
                self.seconds += time.thread_time() - started

    def install(self) -> "Timed":
        setattr(self.module, self.name, self)
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--changes", type=int, default=15, help="timed ClusterRoleBinding changes")
    parser.add_argument("--warmup", type=int, default=3, help="untimed changes first")
    parser.add_argument(
        "--change",
        choices=("clusterrolebinding", "clusterrole", "accesspolicy"),
        default="clusterrolebinding",
        help="what changes: the probe ClusterRoleBinding (created, deleted), a ClusterRole's rules, a policy's spec",
    )
    parser.add_argument("--profile-rules", action="store_true", help="each rule's CPU time over the timed changes")
    parser.add_argument(
        "--memory", action="store_true", help="trace allocations: what the parts kept across re-audits hold at the end"
    )
    args = parser.parse_args()

    counts = {key: max(1, round(value * args.scale)) for key, value in SCALE.items()}
    population = realistic_population(counts)
    namespaces = sorted({str(o["metadata"]["name"]) for o in population if o["kind"] == "Namespace"})
    population += control_plane_objects(namespaces)
    population += pending_pods(population)
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for serial, obj in enumerate(population, start=1):
        by_kind[str(obj["kind"])].append(as_cached(obj, serial))
    serial = len(population)

    pending: list[Change] = []
    state = ClusterState(WATCHED_KINDS)
    state.set_listener(pending.extend)
    for spec in WATCHED_KINDS:
        state.replace(spec.kind, by_kind.get(spec.kind, []))
    print(
        f"population (scale {args.scale:g}): "
        + ", ".join(f"{kind} {state.count(kind)}" for kind in sorted(by_kind) if state.count(kind)),
        flush=True,
    )
    settings = OperatorSettings()
    if args.memory:
        tracemalloc.start()
    audit = IncrementalAudit()
    gc.set_threshold(*GC_THRESHOLDS)  # the controller's, set before its start-up audit
    started = time.perf_counter()
    for change in pending:
        audit.observe(change.kind, change.old, change.new)
    pending.clear()
    audit.full(state, settings.audit_context(now=SYSTEM_CLOCK.now()), state.snapshot())
    findings = len(audit.totals().findings)
    recorder = EventRecorder(api=None)  # type: ignore[arg-type]  # not started: it remembers, posts nothing
    recorder.seed(audit.totals().findings, uid_of)
    gc.freeze()  # as the controller does after its start-up audit
    print(f"start-up audit: {time.perf_counter() - started:.1f} s wall, {findings} findings", flush=True)

    index_build = Timed(permissions.PermissionIndex, "build").install()
    rule_times: dict[str, float] = defaultdict(float)
    if args.profile_rules:
        for rule_id, rule in load_rules().items():
            original = rule.check

            def timed_check(*a: Any, _original: Any = original, _id: str = rule_id, **k: Any) -> Any:
                started = time.thread_time()
                result = list(_original(*a, **k))
                rule_times[_id] += time.thread_time() - started
                return result

            RULES[rule_id] = dataclasses.replace(rule, check=timed_check)

    totals: list[float] = []
    afterwards: list[tuple[float, float]] = []
    snapshots: list[float] = []
    index_times: list[float] = []
    sizes: list[tuple[int, int]] = []
    previous: dict[str, Any] | None = None
    for step in range(args.warmup + args.changes):
        serial += 1
        if args.change == "clusterrole":  # a ClusterRole that ~40 bindings use gains and loses a rule, in turn
            role = state.get("ClusterRole", "", "cr-0005")
            assert role is not None
            rules = [*role["rules"][:2], *([] if step % 2 else [{"apiGroups": [""], "resources": ["secrets"],
                                                                 "verbs": ["get"]}])]  # fmt: skip
            state.upsert("ClusterRole", as_cached({**role, "rules": rules}, serial))
        elif args.change == "accesspolicy":  # the declared rules of a policy whose ServiceAccount a ClusterRoleBinding
            # binds change (AH-GOV-001 reads them: the cluster scope is re-audited)
            policy = next(p for p in state.objects("AccessPolicy") if audit.index.cluster_bound(namespace_of(p)))
            policy = state.get("AccessPolicy", namespace_of(policy), name_of(policy))  # (the latest version)
            assert policy is not None
            verbs = ["get"] if step % 2 else ["get", "list"]
            spec = {
                **policy["spec"],
                "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]},
            }
            state.upsert("AccessPolicy", as_cached({**policy, "spec": spec}, serial))
        elif previous is None:
            previous = probe_binding(step, serial)
            state.upsert("ClusterRoleBinding", previous)
        else:
            state.remove("ClusterRoleBinding", previous)
            previous = None
        index_build.seconds = 0.0
        started = time.thread_time()
        scopes: set[str] = set()
        for change in pending:
            scopes |= audit.observe(change.kind, change.old, change.new)
        pending.clear()
        snapshot = scoped_snapshot(state, audit.index, scopes)  # as the controller's _reaudit does
        taken = time.thread_time()
        audit.update(state, settings.audit_context(now=SYSTEM_CLOCK.now()), scopes, snapshot)  # a context each time
        finished = time.thread_time()
        # What the controller does next whatever the scopes: the Event recorder's bookkeeping, the totals to publish.
        recorder.record([f for scope in scopes for f in audit.findings_in(scope)], uid_of, scopes)
        recorded = time.thread_time()
        audit.totals()
        if step >= args.warmup:
            afterwards.append((recorded - finished, time.thread_time() - recorded))
            totals.append(finished - started)
            snapshots.append(taken - started)
            index_times.append(index_build.seconds)
            sizes.append(
                (len(snapshot.role_bindings) + len(snapshot.cluster_role_bindings), len(snapshot.cluster_roles))
            )
        else:
            rule_times.clear()

    kept = getattr(audit, "kept_permissions", None)
    if kept is not None:
        print(f"bindings taken from earlier builds: {kept.reused}, derived afresh: {kept.derived} (start-up included)")
    if args.memory and kept is not None:
        gc.collect()
        holding = tracemalloc.get_traced_memory()[0]
        audit.kept_permissions = type(kept)()
        del kept
        gc.collect()
        print(f"the kept parts held {(holding - tracemalloc.get_traced_memory()[0]) / 2**20:.1f} MiB at the end")

    def spread(values: list[float]) -> str:
        ms = sorted(v * 1000 for v in values)
        return f"median {statistics.median(ms):.0f} ms (min {ms[0]:.0f}, max {ms[-1]:.0f})"

    print(f"scopes of one change: {len(scopes)}; sub-snapshot: {sizes[-1][0]} bindings, {sizes[-1][1]} ClusterRoles")
    print(f"one {args.change} change, {args.changes} timed (CPU time of the re-audit thread):")
    print(f"  whole re-audit:            {spread(totals)}")
    print(f"  of which the sub-snapshot: {spread(snapshots)}")
    print(f"  of which the index build:  {spread(index_times)}")
    print(f"  then the Event recorder:   {spread([recorded for recorded, _ in afterwards])}")
    print(f"  then the totals:           {spread([assembled for _, assembled in afterwards])}")
    if args.profile_rules:
        per_change = {rule_id: seconds / args.changes for rule_id, seconds in rule_times.items()}
        for rule_id, seconds in sorted(per_change.items(), key=lambda item: -item[1])[:12]:
            print(f"  rule {rule_id}: {seconds * 1000:.1f} ms per change")
    print(f"machine: {os.cpu_count()} cores, load average {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
