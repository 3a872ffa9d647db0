"""Metrics exposition benchmark: a synthetic scan at cluster scale through `Metrics` and its HTTP endpoint.

    python benchmarks/metrics_benchmark.py [--namespaces 2000] [--service-accounts 10000]
        [--role-bindings 20000] [--scrapes 7] [--publishes 5] [--detailed] [--seed 1]

Builds one ScanResult in-process (findings per namespace, ServiceAccount and RoleBinding, sensitive
capabilities per ServiceAccount, hygiene controls per namespace), then prints:
- publish_scan time (median over --publishes calls),
- series count (samples in one scrape; access_hygiene_* alone and in total),
- scrape size (uncompressed and gzip as sent to Prometheus),
- scrape time (median and max over --scrapes GETs through the real HTTP endpoint, with the Accept and
  Accept-Encoding headers Prometheus sends, gzip included): right after a publish, --quiet seconds
  after a publish (no event in between: the usual case for a 30 s scrape interval), and again on
  the same scan,
- the cost of a publish after one scope's result changed (issue 26): publish_scan plus the build of the
  families (what the metrics thread does after a burst), median over --changed-scope-runs, counted from
  scratch (no `by_scope`, as before issue 26) and from the per-scope counts.
Not a timed test: figures depend on the machine.
"""

import argparse
import dataclasses
import gzip
import random
import statistics
import sys
import time
import urllib.request
from collections import defaultdict
from typing import Any

from access_hygiene.metrics import Metrics, ScanResult
from access_hygiene.models.findings import Finding, ObjectRef, Severity, SubjectCapability

# What Prometheus (2.x/3.x) sends when it scrapes a target.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}
CAPABILITIES = ("cluster-admin", "secrets-read", "exec", "escalate", "bind", "impersonate", "nodes-proxy",
                "create-pods", "token-create", "webhook-write", "wildcard")  # fmt: skip
CONTROLS = ("default-sa-automount-off", "default-deny-ingress", "default-deny-egress", "dns-egress-allowed",
            "no-pods-on-default-sa")  # fmt: skip
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "access-hygiene")
PRIVILEGED = frozenset({"kube-system", "access-hygiene"})
EXEMPT = frozenset(SYSTEM_NAMESPACES)
# Rules that fire per RoleBinding subject and per ServiceAccount / workload, with their base severity.
BINDING_RULES = (("AH-RBAC-009", "high"), ("AH-RBAC-013", "high"), ("AH-RBAC-015", "medium"),
                 ("AH-RBAC-019", "high"), ("AH-RBAC-021", "low"), ("AH-RBAC-022", "low"))  # fmt: skip
SA_RULES = (("AH-SA-002", "low"), ("AH-SA-003", "medium"), ("AH-SA-004", "medium"), ("AH-SA-007", "low"))
NAMESPACE_RULES = (("AH-NET-001", "medium"), ("AH-NET-002", "medium"), ("AH-SA-001", "medium"))


def raised(severity: str, namespace: str) -> Severity:
    base = Severity(severity)
    return base.raised() if namespace in PRIVILEGED else base


def finding(rule_id: str, severity: str, namespace: str, kind: str, name: str, exempted: bool) -> Finding:
    return Finding(
        rule_id=rule_id,
        severity=raised(severity, namespace),
        namespace=namespace,
        object=ObjectRef(kind=kind, name=name, namespace=namespace),
        message="synthetic",
        exempted=exempted,
    )


def synthetic_scan(namespaces: int, service_accounts: int, role_bindings: int, seed: int) -> ScanResult:
    rng = random.Random(seed)
    names = [*SYSTEM_NAMESPACES, *(f"team-{i:05d}" for i in range(max(namespaces - len(SYSTEM_NAMESPACES), 0)))]
    findings: list[Finding] = []
    capabilities: list[SubjectCapability] = []
    controls: dict[tuple[str, str], bool] = {}
    for ns in names:
        exempt = ns in EXEMPT
        for rule_id, severity in NAMESPACE_RULES:
            if rng.random() < 0.6:
                findings.append(finding(rule_id, severity, ns, "Namespace", ns, exempt or rng.random() < 0.05))
        if not exempt:
            for control in CONTROLS:
                controls[(ns, control)] = rng.random() < 0.5
    for i in range(service_accounts):
        ns = names[i % len(names)]
        sa = f"sa-{i:06d}"
        for rule_id, severity in rng.sample(SA_RULES, rng.randint(0, 2)):
            findings.append(finding(rule_id, severity, ns, "ServiceAccount", sa, ns in EXEMPT))
        if rng.random() < 0.85:
            for capability in rng.sample(CAPABILITIES[1:], rng.randint(1, 7)):
                capabilities.append(SubjectCapability(namespace=ns, service_account=sa, capability=capability))
    for i in range(role_bindings):
        ns = names[i % len(names)]
        if rng.random() < 0.6:
            rule_id, severity = rng.choice(BINDING_RULES)
            findings.append(finding(rule_id, severity, ns, "RoleBinding", f"rb-{i:06d}", rng.random() < 0.05))
    for i in range(20):  # a few cluster-scoped critical findings, one anonymous binding
        findings.append(finding("AH-RBAC-001", "critical", "", "ClusterRoleBinding", f"crb-{i}", False))
        capabilities.append(
            SubjectCapability(namespace=names[i], service_account=f"admin-{i}", capability="cluster-admin")
        )
    findings.append(finding("AH-RBAC-002", "critical", "", "ClusterRoleBinding", "anonymous", False))
    extra: dict[str, Any] = {}
    if "namespace_classes" in {f.name for f in dataclasses.fields(ScanResult)}:
        extra["namespace_classes"] = {ns: "privileged" if ns in PRIVILEGED else "exempt" for ns in EXEMPT}
    return ScanResult(
        findings=findings,
        subject_capabilities=capabilities,
        namespace_controls=controls,
        exemptions={"active": 40, "expired": 3, "invalid": 1},
        completed_at=time.time(),
        duration_seconds=12.0,
        **extra,
    )


def by_scope(result: ScanResult) -> dict[str, tuple[list[Finding], list[SubjectCapability]]]:
    """The scan's findings and capabilities by scope (their namespace), as the audit keeps them."""
    scopes: dict[str, tuple[list[Finding], list[SubjectCapability]]] = defaultdict(lambda: ([], []))
    for f in result.findings:
        scopes[f.namespace][0].append(f)
    for c in result.subject_capabilities:
        scopes[c.namespace][1].append(c)
    return dict(scopes)


def changed_scope_publishes(result: ScanResult, runs: int, per_scope: bool) -> list[float]:
    """Seconds of publish_scan plus the families' build, each after one scope's result changed."""
    metrics = Metrics(prebuild_after=None)
    scopes = by_scope(result)

    def publish(at: float) -> float:
        ordered = [scopes[scope] for scope in sorted(scopes)]
        scan = dataclasses.replace(
            result,
            findings=[f for found, _ in ordered for f in found],
            subject_capabilities=[c for _, held in ordered for c in held],
            completed_at=at,
            by_scope=dict(scopes) if per_scope else None,
        )
        started = time.perf_counter()
        metrics.publish_scan(scan)
        snapshot = metrics.state.snapshot
        assert snapshot is not None
        snapshot.families()  # what the metrics thread does once the burst settles
        return time.perf_counter() - started

    publish(0.0)  # the first publish counts everything either way
    times = []
    names = sorted(name for name in scopes if name)
    for run in range(runs):
        name = names[run * 7919 % len(names)]
        found, held = scopes[name]
        scopes[name] = (found[1:] if run % 2 == 0 and found else [*found, *found[:1]], list(held))  # a new result
        times.append(publish(float(run + 1)))
    return times


def scrape(url: str) -> tuple[float, bytes, int]:
    request = urllib.request.Request(url, headers=PROMETHEUS_HEADERS)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        wire = response.read()
        encoding = response.headers.get("Content-Encoding", "")
    elapsed = time.perf_counter() - started
    body = gzip.decompress(wire) if encoding == "gzip" else wire
    return elapsed, body, len(wire)


def series_count(body: bytes) -> tuple[int, int]:
    lines = [line for line in body.split(b"\n") if line and not line.startswith(b"#")]
    return sum(1 for line in lines if line.startswith(b"access_hygiene_")), len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespaces", type=int, default=2000)
    parser.add_argument("--service-accounts", type=int, default=10000)
    parser.add_argument("--role-bindings", type=int, default=20000)
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--publishes", type=int, default=5)
    parser.add_argument("--detailed", action="store_true", help="export the opt-in per-subject/per-object series")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds between a publish and a settled scrape")
    parser.add_argument("--changed-scope-runs", type=int, default=9, help="publishes after one scope changed")
    args = parser.parse_args(argv)

    result = synthetic_scan(args.namespaces, args.service_accounts, args.role_bindings, args.seed)
    print(
        f"Scale: {args.namespaces} namespaces, {args.service_accounts} ServiceAccounts, {args.role_bindings} "
        f"RoleBindings -> {len(result.findings)} findings, {len(result.subject_capabilities)} capabilities, "
        f"{len(result.namespace_controls)} namespace controls; detailed={args.detailed}"
    )
    metrics = Metrics(detailed=args.detailed)
    publish_times = []
    for _ in range(max(args.publishes, 1)):
        started = time.perf_counter()
        metrics.publish_scan(result)
        publish_times.append(time.perf_counter() - started)
    metrics.set_managed_objects({"ServiceAccount": 1000, "Role": 1000, "RoleBinding": 1000})
    metrics.set_policies({"ready": 1000})
    metrics.observe_reconcile("policy", "success", 0.1)

    metrics.serve(0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        scrape(url)  # warm-up
        immediate, settled, steady = [], [], []
        for _ in range(max(args.scrapes, 1)):
            metrics.publish_scan(result)  # a new scan, scraped at once: the scrape may have to build it
            elapsed, body, wire_bytes = scrape(url)
            immediate.append(elapsed)
        for _ in range(max(args.scrapes, 1)):
            metrics.publish_scan(result)  # a new scan, scraped after a quiet period (the usual case)
            time.sleep(args.quiet)
            elapsed, body, wire_bytes = scrape(url)
            settled.append(elapsed)
        for _ in range(max(args.scrapes, 1)):
            elapsed, body, wire_bytes = scrape(url)
            steady.append(elapsed)
    finally:
        metrics.shutdown()
    ours, total = series_count(body)
    for label, per_scope in (("from scratch", False), ("per-scope counts", True)):
        times = changed_scope_publishes(result, max(args.changed_scope_runs, 1), per_scope)
        print(
            f"one scope changed, publish + build ({label}): median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms over {len(times)} runs"
        )
    print(f"publish_scan:  median {statistics.median(publish_times) * 1000:.2f} ms over {len(publish_times)} calls")
    print(f"series:        {ours} access_hygiene_* ({total} in total)")
    print(f"scrape size:   {len(body):,} bytes ({wire_bytes:,} bytes gzip on the wire)")
    cases = (
        ("right after publish", immediate),
        (f"{args.quiet:g} s after publish", settled),
        ("same scan again", steady),
    )
    for label, times in cases:
        print(
            f"scrape time:   median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
            f"over {len(times)} scrapes, {label}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
