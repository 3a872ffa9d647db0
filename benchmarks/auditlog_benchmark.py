"""Audit-log parsing benchmark: a generated kube-apiserver audit log (default 1,000,000 events) through the
same streaming reader `suggest` and `unused` use, then a suggestion for every ServiceAccount.

    python benchmarks/auditlog_benchmark.py [--events 1000000] [--gzip] [--seed 1] [--keep PATH]
    python benchmarks/auditlog_benchmark.py --log PATH     # parse an existing log instead

Events are shaped like kube-apiserver's at the Metadata level (audit.k8s.io/v1: user with groups and extra,
objectRef, responseStatus, both timestamps, authorization annotations), ~0.8 KB a line: 400 ServiceAccounts in
40 namespaces, each with its own mix of get/list/watch/create/patch on named and unnamed objects, some denied,
watches logged at ResponseStarted and ResponseComplete, plus non-resource and user requests.

Prints events/s and lines/s for parse + aggregation, the time of the suggestions, and peak memory: process peak
RSS (resource.getrusage; generation streams to disk and is not held in memory) and, with --tracemalloc, the Python
heap peak of the parse alone. For whole-process figures of the command itself, run
`/usr/bin/time -v access-hygiene suggest --all LOG > /dev/null` on a log kept with --keep.
Not a timed test: figures depend on the machine.
"""

import argparse
import gzip
import math
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

from access_hygiene.cli.auditlog_input import read_audit_logs
from access_hygiene.engine.usage.aggregation import UsageData
from access_hygiene.engine.usage.suggestions import suggest

BASE_TIME = 1795132800.0  # 2026-11-20T00:00:00Z
PATTERNS = [
    # (verb, apiGroup, resource, subresource, named, long-running)
    ("get", "", "configmaps", "", True, False),
    ("list", "", "pods", "", False, False),
    ("watch", "", "pods", "", False, True),
    ("create", "", "events", "", True, False),
    ("patch", "", "events", "", True, False),
    ("get", "coordination.k8s.io", "leases", "", True, False),
    ("update", "coordination.k8s.io", "leases", "", True, False),
    ("list", "apps", "deployments", "", False, False),
    ("watch", "apps", "deployments", "", False, True),
    ("get", "", "secrets", "", True, False),
    ("get", "", "pods", "log", True, False),
    ("patch", "apps", "deployments", "scale", True, False),
    ("list", "discovery.k8s.io", "endpointslices", "", False, False),
]
TEMPLATE = (
    '{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{audit_id}",'
    '"stage":"{stage}","requestURI":"{uri}","verb":"{verb}","user":{{"username":"{user}",'
    '"uid":"{uid}","groups":["system:serviceaccounts","system:serviceaccounts:{ns}","system:authenticated"],'
    '"extra":{{"authentication.kubernetes.io/credential-id":["JTI={uid}"],'
    '"authentication.kubernetes.io/pod-name":["{sa}-7d9c8b6f5-x2kqp"]}}}},"sourceIPs":["10.244.1.17"],'
    '"userAgent":"{sa}/v1.4.2 (linux/amd64) kubernetes/client-go","objectRef":{{{ref}}},'
    '"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{received}",'
    '"stageTimestamp":"{stamp}","annotations":{{"authorization.k8s.io/decision":"{decision}",'
    '"authorization.k8s.io/reason":"{reason}"}}}}\n'
)
NON_RESOURCE = (
    '{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{audit_id}",'
    '"stage":"ResponseComplete","requestURI":"/apis/apps/v1?timeout=32s","verb":"get","user":{{"username":"{user}",'
    '"groups":["system:serviceaccounts","system:authenticated"]}},"sourceIPs":["10.244.1.17"],'
    '"userAgent":"kubectl/v1.36.3","responseStatus":{{"metadata":{{}},"code":200}},'
    '"requestReceivedTimestamp":"{received}","stageTimestamp":"{stamp}",'
    '"annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}\n'
)


def _stamp(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e6):06d}Z"


def generate_lines(total: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    accounts = []
    for i in range(400):
        ns = f"team-{i % 40:02d}"
        sa = f"app-{i:03d}"
        patterns = rng.sample(PATTERNS, rng.randint(3, 7))
        accounts.append((ns, sa, str(uuid.UUID(int=rng.getrandbits(128))), patterns))
    span = 8 * 86400.0  # eight days of traffic
    for n in range(total):
        at = BASE_TIME + span * n / total
        audit_id = f"{n:08x}-2f3c-4d7e-9a51-7d1c2a0b9e11"
        if n % 50 == 0:
            yield NON_RESOURCE.format(audit_id=audit_id, user="alice", received=_stamp(at), stamp=_stamp(at + 0.002))
            continue
        ns, sa, uid, patterns = accounts[rng.randrange(len(accounts))]
        verb, group, res, sub, named, long_running = patterns[rng.randrange(len(patterns))]
        name = f"{sa}-{rng.randrange(3)}" if named else ""
        denied = res == "secrets" and rng.random() < 0.5
        ref = f'"resource":"{res}","namespace":"{ns}","apiVersion":"{group + "/" if group else ""}v1"'
        if group:
            ref += f',"apiGroup":"{group}"'
        if name:
            ref += f',"name":"{name}"'
        if sub:
            ref += f',"subresource":"{sub}"'
        prefix = f"/apis/{group}/v1" if group else "/api/v1"
        uri = f"{prefix}/namespaces/{ns}/{res}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")
        fields = {
            "audit_id": audit_id, "uri": uri, "verb": verb, "user": f"system:serviceaccount:{ns}:{sa}", "uid": uid,
            "ns": ns, "sa": sa, "ref": ref, "code": 403 if denied else 200, "received": _stamp(at),
            "decision": "forbid" if denied else "allow",
            "reason": "" if denied else f'RBAC: allowed by RoleBinding \\"{sa}/{ns}\\" of Role \\"{sa}\\" to '
            f'ServiceAccount \\"{sa}/{ns}\\"',
        }  # fmt: skip
        if long_running and not denied:
            yield TEMPLATE.format(stage="ResponseStarted", stamp=_stamp(at + 0.001), **fields)
            yield TEMPLATE.format(stage="ResponseComplete", stamp=_stamp(at + 300), **fields)
        else:
            yield TEMPLATE.format(stage="ResponseComplete", stamp=_stamp(at + 0.003), **fields)


def write_log(path: Path, total: int, seed: int, compress: bool) -> tuple[int, int]:
    lines = 0
    with gzip.open(path, "wb", compresslevel=1) if compress else path.open("wb") as stream:
        chunk: list[str] = []
        for line in generate_lines(total, seed):
            chunk.append(line)
            if len(chunk) >= 10000:
                stream.write("".join(chunk).encode())
                lines += len(chunk)
                chunk = []
        stream.write("".join(chunk).encode())
        lines += len(chunk)
    return lines, path.stat().st_size


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="requests to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gzip", action="store_true", help="write and read the log gzip-compressed")
    parser.add_argument("--keep", type=Path, help="write the generated log here and keep it")
    parser.add_argument("--log", type=Path, help="parse this existing log instead of generating one")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap peak of the parse")
    args = parser.parse_args()

    tmpdir = None
    if args.log:
        path = args.log
        print(f"log: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    else:
        if args.keep:
            path = args.keep
        else:
            tmpdir = tempfile.TemporaryDirectory(prefix="auditlog-bench-")
            path = Path(tmpdir.name) / ("audit.log.gz" if args.gzip else "audit.log")
        started = time.perf_counter()
        lines, size = write_log(path, args.events, args.seed, args.gzip)
        print(f"generated: {args.events:,} requests, {lines:,} lines, {size / 2**20:.0f} MiB on disk "
              f"({'gzip' if args.gzip else 'plain'}) in {time.perf_counter() - started:.1f} s")  # fmt: skip
    rss_before = peak_rss_mib()
    try:
        if args.tracemalloc:
            tracemalloc.start()
        usage = UsageData()
        started = time.perf_counter()
        report = read_audit_logs([str(path)], usage)
        parse_seconds = time.perf_counter() - started
        heap_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
        if args.tracemalloc:
            tracemalloc.stop()
        started = time.perf_counter()
        accounts = list(usage.service_accounts())
        suggestions = [suggest(u, s.namespace, s.name) for s, u in accounts]
        suggest_seconds = time.perf_counter() - started
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    rules = sum(len(s.rules) + len(s.cluster_rules) for s in suggestions)
    print(f"parsed: {report.lines:,} lines, {report.events:,} events, {usage.requests:,} requests, "
          f"problems: {'yes' if report.partial else 'none'}")  # fmt: skip
    print(f"parse + aggregate: {parse_seconds:.2f} s = {report.events / parse_seconds:,.0f} events/s "
          f"({report.lines / parse_seconds:,.0f} lines/s)")  # fmt: skip
    print(f"suggest: {len(suggestions)} ServiceAccounts, {rules} rules in {suggest_seconds * 1000:.0f} ms")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (before parsing: {rss_before:.0f} MiB)")
    if args.tracemalloc:
        print(f"Python heap peak during the parse: {heap_peak / 2**20:.1f} MiB")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; window {math.floor(usage.window_seconds)} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
