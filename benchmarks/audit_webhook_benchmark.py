"""Audit webhook benchmark (continuous mode): how many audit events per second the operator's receiver ingests,
and how much memory the usage counters take as ServiceAccounts accumulate.

    python benchmarks/audit_webhook_benchmark.py [--events 200000] [--batch 400] [--clients 2] [--subjects 1000]
    python benchmarks/audit_webhook_benchmark.py --memory-only [--subjects 5000] [--keys 30]

1. Ingest: the real receiver (k8s/audit_webhook.py: TLS, bearer token, JSON, parse_event, bounded counters under
   the lock, exactly as UsageMonitor wires it) on loopback; client processes POST EventLists of --batch events
   (kube-apiserver's default --audit-webhook-batch-max-size is 400) over keep-alive TLS connections, like the
   API server's batch backend. Events are Metadata-level, shaped like kube-apiserver's (~0.8 KB each), spread
   over --subjects ServiceAccounts with 13 request patterns. Prints events/s and MB/s as the receiver answered
   them (every POST got 200 before it counts), and the receiver process's RSS before and after.
2. Judge: one judgement pass (what runs every usage_interval_seconds, in a worker thread): --subjects judged
   ServiceAccounts, each bound to `edit`, among --bindings other RoleBindings; prints its time.
3. Memory: RSS (VmRSS) of a fresh process before and after recording --keys distinct requests for each of
   --subjects ServiceAccounts into UsageCounters, in steps; prints bytes per subject and per record, and the
   estimate at the default caps (5000 subjects x 128 records).

Not a timed test: figures depend on the machine (the clients share its cores with the receiver).
"""

import argparse
import http.client
import json
import multiprocessing
import os
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from access_hygiene.engine.usage import DEFAULT_MAX_KEYS, DEFAULT_MAX_SUBJECTS
from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.engine.usage.counters import UsageCounters, record_all
from access_hygiene.k8s.audit_webhook import AuditWebhookServer, server_context
from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs

PATTERNS = [
    # (verb, apiGroup, resource, subresource, named)
    ("get", "", "configmaps", "", True),
    ("list", "", "pods", "", False),
    ("watch", "", "pods", "", False),
    ("create", "", "events", "", True),
    ("patch", "", "events", "", True),
    ("get", "coordination.k8s.io", "leases", "", True),
    ("update", "coordination.k8s.io", "leases", "", True),
    ("list", "apps", "deployments", "", False),
    ("watch", "apps", "deployments", "", False),
    ("get", "", "secrets", "", True),
    ("get", "", "pods", "log", True),
    ("patch", "apps", "deployments", "scale", True),
    ("list", "discovery.k8s.io", "endpointslices", "", False),
]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_event(number: int, subjects: int) -> dict[str, Any]:
    verb, group, resource, subresource, named = PATTERNS[number % len(PATTERNS)]
    sa_number = (number // len(PATTERNS)) % subjects
    namespace, sa = f"team-{sa_number % 40}", f"app-{sa_number}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(1795132800 + number))
    ref: dict[str, Any] = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
    if group:
        ref["apiGroup"] = group
    if subresource:
        ref["subresource"] = subresource
    if named:
        ref["name"] = f"{sa}-{number % 3}"
    return {
        "level": "Metadata",
        "auditID": f"{number:08x}-2f3c-4d7e-9a51-7d1c2a0b9e11",
        "stage": "ResponseStarted" if verb == "watch" else "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{namespace}/{resource}",
        "verb": verb,
        "user": {
            "username": f"system:serviceaccount:{namespace}:{sa}",
            "uid": f"{sa_number:08x}-0000-4000-8000-000000000000",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/pod-name": [f"{sa}-7d9c8b6f5-x2kqp"]},
        },
        "sourceIPs": ["10.244.1.17"],
        "userAgent": f"{sa}/v1.4.2 (linux/amd64) kubernetes/client-go",
        "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed"},
    }


def client(port: int, ca: str, token: str, bodies: list[bytes], rounds: int, results: Any) -> None:
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    failures = 0
    for round_number in range(rounds):
        body = bodies[round_number % len(bodies)]
        connection.request("POST", "/audit", body, headers)
        response = connection.getresponse()
        response.read()
        failures += response.status != 200
    connection.close()
    results.put(failures)


def ingest(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="audit-webhook-bench-"))
    ca = make_certs(workdir / "pki")
    certs = make_audit_webhook_certs(workdir / "webhook", ca)
    token = "benchmark-token"
    (workdir / "token").write_text(token)
    counters = UsageCounters()
    lock = threading.Lock()
    events: dict[str, int] = {}

    def sink(requests: list[AuditRequest]) -> dict[str, int]:
        now = time.time()
        with lock:
            return record_all(counters, requests, now)

    def count_events(result: str, count: int) -> None:
        with lock:
            events[result] = events.get(result, 0) + count

    context = server_context(str(certs.serving_cert), str(certs.serving_key))
    server = AuditWebhookServer(
        "127.0.0.1", 0, context, str(workdir / "token"), sink, lambda code: None, count_events, 16 * 1024 * 1024
    )
    server.start()
    batches_needed = max(1, args.events // args.batch)
    # Distinct bodies (so different subjects appear), encoded once: the clients spend no time on JSON.
    distinct = min(batches_needed, max(1, (args.subjects * len(PATTERNS)) // args.batch + 1))
    bodies = [
        json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList",
                    "items": [make_event(b * args.batch + i, args.subjects) for i in range(args.batch)]}).encode()
        for b in range(distinct)
    ]  # fmt: skip
    body_bytes = sum(len(b) for b in bodies) / len(bodies)
    rounds = batches_needed // args.clients
    before = rss_bytes()
    results: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(
            target=client, args=(server.port, str(ca.ca_cert), token, bodies[c :: args.clients] or bodies, rounds,
                                 results)
        )
        for c in range(args.clients)
    ]  # fmt: skip
    started = time.perf_counter()
    for process in processes:
        process.start()
    failures = sum(results.get() for _ in processes)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    server.stop()
    total = rounds * args.clients * args.batch
    print(f"ingest: {total:,} events in {rounds * args.clients:,} POSTs of {args.batch} "
          f"(~{body_bytes / args.batch:.0f} B/event), {args.clients} client process(es), TLS keep-alive")  # fmt: skip
    megabytes = total * body_bytes / args.batch / 1e6
    print(f"  {elapsed:.2f} s -> {total / elapsed:,.0f} events/s, {megabytes / elapsed:.1f} MB/s; "
          f"non-200 answers: {failures}")  # fmt: skip
    print(f"  events by result: {dict(sorted(events.items()))}")
    records = sum(len(s.seen) for s in counters.subjects.values())
    print(f"  counters: {len(counters.subjects):,} ServiceAccounts, {records:,} records; receiver RSS "
          f"{before / 2**20:.0f} -> {rss_bytes() / 2**20:.0f} MiB (holding the request bodies too)")  # fmt: skip


def memory(args: argparse.Namespace) -> None:
    counters = UsageCounters(max_subjects=args.subjects, max_keys=max(args.keys, 1))
    baseline = rss_bytes()
    print(f"memory: {args.subjects:,} ServiceAccounts x {args.keys} distinct requests (RSS baseline "
          f"{baseline / 2**20:.1f} MiB)")  # fmt: skip
    steps = sorted({max(1, args.subjects * k // 4) for k in range(1, 5)})
    done = 0
    for step in steps:
        for sa_number in range(done, step):
            namespace, sa = f"team-{sa_number % 40}", f"app-{sa_number}"
            user = f"system:serviceaccount:{namespace}:{sa}"
            for key in range(args.keys):
                verb, group, resource, subresource, named = PATTERNS[key % len(PATTERNS)]
                request = AuditRequest(user, verb, True, 0.0, group, resource, subresource,
                                       f"{namespace}-{key // len(PATTERNS)}", f"{sa}-0" if named else "")  # fmt: skip
                counters.add(request, now=float(key))
        done = step
        grown = rss_bytes() - baseline
        print(f"  {step:>6,} subjects: +{grown / 2**20:7.1f} MiB  ({grown / step / 1024:.1f} KiB/subject, "
              f"{grown / (step * args.keys):.0f} B/record)")  # fmt: skip
    per_record = (rss_bytes() - baseline) / (args.subjects * args.keys)
    caps = DEFAULT_MAX_SUBJECTS * DEFAULT_MAX_KEYS
    print(f"  at the default caps ({DEFAULT_MAX_SUBJECTS:,} x {DEFAULT_MAX_KEYS} records) that is about "
          f"{caps * per_record / 2**20:,.0f} MiB")  # fmt: skip


def judge(args: argparse.Namespace) -> None:
    """UsageMonitor.judge() itself over a ClusterState: --subjects ServiceAccounts, each bound to `edit` by a
    RoleBinding of its own and managed by an AccessPolicy, among --bindings RoleBindings that bind nobody observed.
    Everyone is due at once (spread over passes by the judge budget); then a pass with nothing changed, and one
    after a binding changed."""
    from prometheus_client import CollectorRegistry

    from access_hygiene.k8s.usage_monitor import UsageMonitor
    from access_hygiene.k8s.watch_cache import ClusterState, WatchSpec
    from access_hygiene.metrics import UsageMetrics
    from access_hygiene.settings import OperatorSettings

    kinds = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount", "AccessPolicy")
    state = ClusterState([WatchSpec("v1", kind) for kind in kinds])
    bindings, policies = [], []
    for sa_number in range(args.subjects):
        namespace, sa = f"team-{sa_number % 40}", f"app-{sa_number}"
        bindings.append(_role_binding(f"{sa}-edit", namespace, sa))
        policies.append({"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy",
                         "metadata": {"name": sa, "namespace": namespace}, "spec": {}})  # fmt: skip
    bindings += [_role_binding(f"other-{n}", f"team-{n % 40}", f"unobserved-{n}") for n in range(args.bindings)]
    for kind, items in (("RoleBinding", bindings), ("AccessPolicy", policies)):
        state.replace(kind, items)
    for kind in ("Role", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"):
        state.replace(kind, [])
    workdir = Path(tempfile.mkdtemp(prefix="audit-webhook-judge-"))
    certs = make_audit_webhook_certs(workdir / "webhook", make_certs(workdir / "pki"))
    settings = OperatorSettings(
        audit_webhook_enabled=True, audit_webhook_cert_file=str(certs.serving_cert),
        audit_webhook_key_file=str(certs.serving_key), audit_webhook_token_file=str(workdir / "token"),
        usage_min_window_seconds=0, usage_max_subjects=args.subjects,
    )  # fmt: skip
    monitor = UsageMonitor(None, state, settings, UsageMetrics(CollectorRegistry()))
    for sa_number in range(args.subjects):
        namespace, sa = f"team-{sa_number % 40}", f"app-{sa_number}"
        for key in range(args.keys):
            verb, group, resource, subresource, named = PATTERNS[key % len(PATTERNS)]
            user = f"system:serviceaccount:{namespace}:{sa}"
            name = f"{sa}-0" if named else ""
            request = AuditRequest(user, verb, True, 0.0, group, resource, subresource, namespace, name)
            monitor.counters.add(request, now=0.0)
    print(f"judge: {args.subjects:,} ServiceAccounts x {args.keys} records (each bound to edit, with an "
          f"AccessPolicy) among {len(bindings):,} RoleBindings; UsageMonitor.judge():")  # fmt: skip
    started, passes, longest = time.perf_counter(), 0, 0.0
    while True:  # every ServiceAccount reaches the window at once: spread over passes by the judge budget
        pass_started = time.perf_counter()
        result = monitor.judge(now=1.0)
        passes, longest = passes + 1, max(longest, time.perf_counter() - pass_started)
        if not result.pending:
            break
    total = sum(j.unused_count for j in result.subjects.values())
    budget = monitor.judge_budget_seconds
    print(f"  everyone due at once: {time.perf_counter() - started:.2f} s of judging in {passes} pass(es) "
          f"(longest {longest:.2f} s; budget {budget:.0f} s a pass); {total:,} unused pairs")  # fmt: skip
    for label in ("next pass, nothing changed", "next pass, one binding changed"):
        if "binding changed" in label:
            changed = _role_binding("app-0-edit", "team-0", "app-0")
            changed["roleRef"]["name"] = "view"
            state.upsert("RoleBinding", changed)
        started = time.perf_counter()
        result = monitor.judge(now=1.0)
        print(f"  {label}: {time.perf_counter() - started:.2f} s ({len(result.subjects):,} judged)")


def _role_binding(name: str, namespace: str, sa: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--bindings", type=int, default=20000, help="unrelated RoleBindings in the judge step")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.memory_only:
        ingest(args)
        judge(args)
    # The memory figure wants a fresh process (the ingest above already grew this one).
    if args.memory_only:
        memory(args)
    else:
        import subprocess

        subprocess.run([sys.executable, __file__, "--memory-only", "--subjects", "5000", "--keys", str(args.keys)],
                       check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
