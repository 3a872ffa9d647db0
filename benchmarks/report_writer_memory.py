"""Report writer memory: what ReportWriter keeps and allocates for a large generated population, in-process.

    python benchmarks/report_writer_memory.py [--findings 42600] [--namespaces 2000] [--top 8]

The API is a stand-in that answers like the API server (paged LISTs; POST/PATCH: the object back with
managedFields) and counts requests, so this measures the writer alone, not the network. Prints, for the start-up
sync (every report new), a sync after one namespace's findings changed, a sync with nothing changed and a new
writer's first sync over the reports already there (an operator restart): the
writes, the time, tracemalloc's peak during the sync and what stays allocated afterwards (the writer's state),
and VmRSS growth. --top prints the biggest allocation sites still held after the start-up sync.
Not a timed test: figures depend on the machine.
"""

import argparse
import gc
import json
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from access_hygiene.k8s import reports as reports_module
from access_hygiene.k8s.reports import ReportWriter
from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject

RULES = [f"AH-RBAC-{n:03d}" for n in range(1, 23)] + [f"AH-SA-{n:03d}" for n in range(1, 11)]


def population(count: int, namespaces: int) -> list[Finding]:
    """Findings shaped like the live audit's: most namespaced (bindings, ServiceAccounts, workloads), some
    cluster-scoped, a few exempted; messages of realistic length."""
    severities = list(Severity)
    findings = []
    for i in range(count):
        namespace = f"team-{i % namespaces:04d}" if i % 20 else ""
        kind = ("RoleBinding", "ServiceAccount", "Deployment")[i % 3] if namespace else "ClusterRoleBinding"
        findings.append(
            Finding(
                rule_id=RULES[i % len(RULES)],
                severity=severities[i % 4],
                namespace=namespace,
                object=ObjectRef(
                    kind=kind, name=f"object-{i}", namespace=namespace, api_version="rbac.authorization.k8s.io/v1"
                ),
                message=f"system:serviceaccount:{namespace or 'apps'}:sa-{i} can get/list/watch secrets via "
                f"Role/reader-{i} (bound by RoleBinding/binding-{i})",
                subject=Subject(kind="ServiceAccount", name=f"sa-{i}", namespace=namespace or "apps"),
                exempted=i % 17 == 0,
                exemption_reason="benchmark" if i % 17 == 0 else "",
            )
        )
    return findings


class FakeApi:
    """Answers the writer's requests as the API server would (paged LISTs, objects back with managedFields), keeps
    what was written as compressed JSON (the server's memory is not the writer's) and counts requests
    by verb."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.stored: dict[str, bytes] = {}

    def __call__(self, api: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.requests[method] += 1
        query = kwargs.get("query") or {}
        if method == "GET":
            return self._list(path, query)
        body: dict[str, Any] = json.loads(json.dumps(kwargs.get("body") or {}))
        if method == "DELETE":
            self.stored.pop(path, None)
            return {}
        target = f"{path}/{body['metadata']['name']}" if method == "POST" else path
        body["metadata"]["managedFields"] = [{"manager": "access-hygiene", "fieldsV1": {"f:results": {}}}]
        self.stored[target] = zlib.compress(json.dumps(body).encode())
        return body

    def _list(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        plural = path.rsplit("/", 1)[1]
        paths = sorted(p for p in self.stored if p.split("/")[-2] == plural)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or len(paths) or 1)
        token = str(start + limit) if start + limit < len(paths) else ""
        items = [json.loads(zlib.decompress(self.stored[p])) for p in paths[start : start + limit]]
        return {"items": items, "metadata": {"continue": token}}


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def measured_sync(label: str, writer: ReportWriter, api: FakeApi, findings: list[Finding], **kwargs: Any) -> None:
    gc.collect()
    before_rss = rss_kib()
    tracemalloc.reset_peak()
    held_before = tracemalloc.get_traced_memory()[0]
    requests_before = sum(api.requests.values())
    started = time.perf_counter()
    writes = writer.sync(None, findings, **kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    print(
        f"{label:<28} writes {writes:>5}  requests {sum(api.requests.values()) - requests_before:>5}  "
        f"{seconds:6.2f} s  peak +{(peak - held_before) / 2**20:6.1f} MiB  "
        f"held +{(held - held_before) / 2**20:6.1f} MiB  VmRSS +{(rss_kib() - before_rss) / 1024:6.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--findings", type=int, default=42_600)
    parser.add_argument("--namespaces", type=int, default=2_000)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--rss-only", action="store_true", help="no tracemalloc (its overhead): time and VmRSS")
    args = parser.parse_args(argv)
    findings = population(args.findings, args.namespaces)
    api = FakeApi()
    vars(reports_module)["request"] = api  # the writer's one way to the API server
    writer = ReportWriter()
    changed_namespace = "team-0007"
    print(f"{len(findings)} findings over {args.namespaces} namespaces; VmRSS {rss_kib() / 1024:.0f} MiB")
    if not args.rss_only:
        tracemalloc.start(10)
        start_snapshot = tracemalloc.take_snapshot()
    measured_sync("start-up (all new)", writer, api, findings)
    after_start = None if args.rss_only else tracemalloc.take_snapshot()
    dropped = next(f for f in findings if f.namespace == changed_namespace)
    changed = [f for f in findings if f is not dropped]
    measured_sync("one namespace changed", writer, api, changed, **_scoped(writer, {changed_namespace}))
    measured_sync("nothing changed", writer, api, changed, **_scoped(writer, set()))
    restarted = ReportWriter()  # the first writer stays too: both held, as a process that restarted its writer
    measured_sync("restart (reads live reports)", restarted, api, changed)
    print(f"requests by verb: {dict(api.requests)}")
    print(f"VmRSS at the end {rss_kib() / 1024:.0f} MiB, VmHWM {rss_kib('VmHWM') / 1024:.0f} MiB")
    if args.top and after_start is not None:
        print(f"largest allocation sites held after the start-up sync (top {args.top}):")
        for stat in after_start.compare_to(start_snapshot, "traceback")[: args.top]:
            frame = next((f for f in stat.traceback if "access_hygiene" in f.filename), stat.traceback[0])
            print(f"  {stat.size_diff / 2**20:6.1f} MiB  {stat.count_diff:>8} blocks  {frame.filename}:{frame.lineno}")
    return 0


def _scoped(writer: ReportWriter, scopes: set[str]) -> dict[str, Any]:
    """The changed scopes, for a writer that takes them (one that does not re-renders everything)."""
    return {"scopes": scopes} if "scopes" in ReportWriter.sync.__code__.co_varnames else {}


if __name__ == "__main__":
    sys.exit(main())
