"""Policy report benchmark: N synthetic findings over M namespaces rendered as OpenReports objects.

    python benchmarks/reports_benchmark.py [--findings 20000] [--namespaces 200] [--max-results 500] [--runs 5]

Prints the number of reports, the median render time and the largest report's JSON size (reports are
bounded by --max-results; etcd refuses objects above 1.5 MiB). Writes are not timed here: the writer
rewrites only changed reports, which tests/cluster/test_reports.py checks in the API server's audit log.
Not a timed test: figures depend on the machine.
"""

import argparse
import json
import resource
import statistics
import sys
import time

from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from access_hygiene.render.reports import render_reports


def synthetic_findings(count: int, namespaces: int) -> list[Finding]:
    severities = list(Severity)
    findings = []
    for i in range(count):
        namespace = f"ns-{i % namespaces}" if i % 10 else ""  # one in ten cluster-scoped
        findings.append(
            Finding(
                rule_id=f"AH-RBAC-{i % 22 + 1:03d}",
                severity=severities[i % 4],
                namespace=namespace,
                object=ObjectRef(
                    kind="RoleBinding" if namespace else "ClusterRoleBinding",
                    name=f"binding-{i}",
                    namespace=namespace,
                    api_version="rbac.authorization.k8s.io/v1",
                ),
                message=f"system:serviceaccount:apps:sa-{i} can get/list/watch secrets via Role/reader-{i}",
                subject=Subject(kind="ServiceAccount", name=f"sa-{i}", namespace="apps"),
                exempted=i % 17 == 0,
                exemption_reason="benchmark" if i % 17 == 0 else "",
            )
        )
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--findings", type=int, default=20_000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--max-results", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    findings = synthetic_findings(args.findings, args.namespaces)
    times = []
    reports: list[dict[str, object]] = []
    for _ in range(args.runs):
        started = time.perf_counter()
        reports = render_reports(findings, args.max_results)
        times.append(time.perf_counter() - started)
    largest = max(len(json.dumps(report)) for report in reports)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.findings} findings, {args.namespaces} namespaces -> {len(reports)} reports")
    print(f"render: median {statistics.median(times) * 1000:.0f} ms over {args.runs} runs")
    print(f"largest report: {largest / 1024:.0f} KiB (max {args.max_results} results); peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
