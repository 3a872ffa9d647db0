"""Scan benchmark: a generated dump of RBAC objects (default 50,000) through the full audit.

    python benchmarks/scan_benchmark.py [--objects 50000] [--seed 1] [--tracemalloc] [--dump out.yaml]

Prints objects/s for the scan (snapshot + all rules + exemptions + ServiceAccount capabilities) and peak
memory: process peak RSS (resource.getrusage) or, with --tracemalloc, the Python heap peak of the scan alone.
Not a timed test: figures depend on the machine. What a user waits for (the whole CLI, parsing included)
is measured by cli_benchmark.py; `make bench` runs both.
"""

import argparse
import random
import resource
import sys
import time
import tracemalloc
from typing import Any

from access_hygiene.clock import SYSTEM_CLOCK
from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.capabilities import service_account_capabilities

RBAC = "rbac.authorization.k8s.io/v1"
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "*", "bind", "escalate", "impersonate"]
GROUPS = ["", "apps", "batch", "rbac.authorization.k8s.io", "example.com", "*"]
RESOURCES = ["pods", "pods/exec", "pods/log", "secrets", "configmaps", "deployments", "jobs", "services",
             "serviceaccounts/token", "roles", "events", "widgets", "*"]  # fmt: skip
# Per namespace: service accounts, roles, role bindings; the rest are cluster roles / bindings.
SHARE = {"ServiceAccount": 0.30, "Role": 0.24, "RoleBinding": 0.36, "ClusterRole": 0.05, "ClusterRoleBinding": 0.05}


def _rules(rng: random.Random) -> list[dict[str, Any]]:
    rules = []
    for _ in range(rng.randint(1, 4)):
        risky = rng.random() < 0.1
        rule: dict[str, Any] = {
            "apiGroups": rng.sample(GROUPS if risky else GROUPS[:5], rng.randint(1, 2)),
            "resources": rng.sample(RESOURCES if risky else RESOURCES[:12], rng.randint(1, 3)),
            "verbs": rng.sample(VERBS if risky else VERBS[:7], rng.randint(1, 4)),
        }
        if rng.random() < 0.1:
            rule["resourceNames"] = [f"obj-{rng.randint(0, 9)}"]
        rules.append(rule)
    return rules


def generate(total: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    counts = {kind: int(total * share) for kind, share in SHARE.items()}
    counts["RoleBinding"] += total - sum(counts.values())
    namespaces = [f"ns-{i:04d}" for i in range(max(1, total // 50))]
    objects: list[dict[str, Any]] = []
    for i in range(counts["ClusterRole"]):
        labels = {"rbac.authorization.k8s.io/aggregate-to-view": "true"} if i % 200 == 0 else {}
        objects.append({"apiVersion": RBAC, "kind": "ClusterRole",
                        "metadata": {"name": f"cr-{i}", "labels": labels}, "rules": _rules(rng)})  # fmt: skip
    objects.append({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "view"},
                    "aggregationRule": {"clusterRoleSelectors": [
                        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}})  # fmt: skip
    for i in range(counts["ServiceAccount"]):
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": f"sa-{i}", "namespace": namespaces[i % len(namespaces)]}})  # fmt: skip
    for i in range(counts["Role"]):
        metadata = {"name": f"role-{i // len(namespaces)}", "namespace": namespaces[i % len(namespaces)]}
        objects.append({"apiVersion": RBAC, "kind": "Role", "metadata": metadata, "rules": _rules(rng)})
    roles_per_ns = max(1, counts["Role"] // len(namespaces))

    def subjects(namespace: str) -> list[dict[str, Any]]:
        chosen = []
        for _ in range(rng.randint(1, 3)):
            pick = rng.random()
            if pick < 0.6:
                sa = rng.randrange(counts["ServiceAccount"] or 1)
                chosen.append({"kind": "ServiceAccount", "name": f"sa-{sa}", "namespace": namespace})
            elif pick < 0.85:
                chosen.append({"kind": "User", "name": f"user-{rng.randrange(2000)}", "apiGroup": RBAC[:-3]})
            else:
                chosen.append({"kind": "Group", "name": f"team-{rng.randrange(100)}", "apiGroup": RBAC[:-3]})
        return chosen

    for i in range(counts["RoleBinding"]):
        namespace = namespaces[i % len(namespaces)]
        if rng.random() < 0.3:
            ref = {
                "apiGroup": RBAC[:-3],
                "kind": "ClusterRole",
                "name": f"cr-{rng.randrange(counts['ClusterRole'] or 1)}",
            }
        else:
            ref = {"apiGroup": RBAC[:-3], "kind": "Role", "name": f"role-{rng.randrange(roles_per_ns + 1)}"}
        metadata = {"name": f"rb-{i}", "namespace": namespace}
        objects.append({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": metadata, "roleRef": ref,
                        "subjects": subjects(namespace)})  # fmt: skip
    for i in range(counts["ClusterRoleBinding"]):
        ref = {"apiGroup": RBAC[:-3], "kind": "ClusterRole", "name": f"cr-{rng.randrange(counts['ClusterRole'] or 1)}"}
        objects.append({"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": f"crb-{i}"},
                        "roleRef": ref, "subjects": subjects(rng.choice(namespaces))})  # fmt: skip
    return objects


def scan(objects: list[dict[str, Any]]) -> tuple[int, int]:
    snapshot = ClusterSnapshot.from_objects(objects)
    ctx = AuditContext(now=SYSTEM_CLOCK.now())
    findings = run_audit(snapshot, ctx)
    capabilities = service_account_capabilities(snapshot, ctx)
    return len(findings), len(capabilities)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="measure the scan's Python heap peak (slower)")
    parser.add_argument("--dump", help="also write the generated objects as multi-document YAML (for the CLI)")
    args = parser.parse_args()

    objects = generate(args.objects, args.seed)
    if args.dump:
        import yaml

        with open(args.dump, "w") as stream:  # LibYAML's dumper when available: same text as safe_dump_all
            yaml.dump_all(objects, stream, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    findings, capabilities = scan(objects)
    elapsed = time.perf_counter() - started
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else 0.0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(f"objects:            {len(objects)}")
    print(f"findings:           {findings}")
    print(f"SA capabilities:    {capabilities}")
    print(f"scan time:          {elapsed:.2f} s")
    print(f"throughput:         {len(objects) / elapsed:,.0f} objects/s")
    print(f"peak RSS:           {rss_peak:.0f} MiB (after generating the dump: {rss_before:.0f} MiB)")
    if args.tracemalloc:
        print(f"scan heap peak:     {heap_peak:.0f} MiB (tracemalloc; slows the scan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
