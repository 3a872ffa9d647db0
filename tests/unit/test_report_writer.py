"""ReportWriter against an in-memory stand-in for the API server: changed scopes only, no rewrite of unchanged
content (also after a restart), memory bounded by one report, write budgets, absent CRDs, an unreachable server.
tests/cluster/test_reports.py holds the same writer against the real API server."""

import copy
import json
import logging
import tracemalloc
from typing import Any

import kubernetes
import pytest
import urllib3

from access_hygiene.k8s import reports as reports_module
from access_hygiene.k8s.errors import OUTAGE
from access_hygiene.k8s.reports import OWNED_SELECTOR, ReportWriter
from access_hygiene.k8s.watch_cache import crd_established
from access_hygiene.models.findings import Finding, ObjectRef, Severity
from access_hygiene.render.reports import render_report

pytestmark = pytest.mark.unit
PREFIX = "/apis/openreports.io/v1alpha1"
API: Any = None  # the client is not used: the stand-in replaces the writer's requests


class FakeReportsApi:
    """Reports kept by path; answers LIST (label selector, limit/continue), POST, apply PATCH and DELETE."""

    def __init__(self, page_size_cap: int = 1000) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.page_size_cap = page_size_cap
        self.failure: BaseException | None = None
        self.served = True

    def __call__(self, api: Any, method: str, path: str, *, query: Any = None, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path))
        if self.failure is not None:
            raise self.failure
        if not self.served:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        query = dict(query or {})
        if method == "GET":
            return self._list(path, query)
        if method == "POST":
            target = f"{path}/{body['metadata']['name']}"
            if target in self.objects:
                raise kubernetes.client.ApiException(status=409, reason="AlreadyExists")
            self.objects[target] = json.loads(json.dumps(body))
            return copy.deepcopy(self.objects[target])
        if method == "PATCH":
            self.objects[path] = json.loads(json.dumps(body))
            return copy.deepcopy(self.objects[path])
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                raise kubernetes.client.ApiException(status=404, reason="Not Found")
            return {}
        raise AssertionError(method)

    def _list(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        plural = path.rsplit("/", 1)[1]
        key, value = query["labelSelector"].split("=")
        matching = sorted(
            p for p, obj in self.objects.items()
            if p.split("/")[-2] == plural and obj["metadata"].get("labels", {}).get(key) == value
        )  # fmt: skip
        start = int(query.get("continue") or 0)
        limit = min(int(query.get("limit") or len(matching) or 1), self.page_size_cap)
        page = matching[start : start + limit]
        token = str(start + limit) if start + limit < len(matching) else ""
        return {"items": [copy.deepcopy(self.objects[p]) for p in page], "metadata": {"continue": token}}

    def writes(self) -> list[tuple[str, str]]:
        return [call for call in self.calls if call[0] != "GET"]

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeReportsApi:
    api = FakeReportsApi()
    monkeypatch.setattr(reports_module, "request", api)
    return api


def finding(namespace: str, name: str, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(
        rule_id="AH-RBAC-009",
        severity=severity,
        namespace=namespace,
        object=ObjectRef(kind="RoleBinding" if namespace else "ClusterRoleBinding", name=name, namespace=namespace),
        message=f"{name} reads secrets",
    )


def population(namespaces: int, per_namespace: int) -> list[Finding]:
    return [finding(f"ns-{n}", f"b-{i}") for n in range(namespaces) for i in range(per_namespace)] + [
        finding("", "cluster-wide")
    ]


def report_path(namespace: str) -> str:
    if not namespace:
        return f"{PREFIX}/clusterreports/access-hygiene"
    return f"{PREFIX}/namespaces/{namespace}/reports/access-hygiene"


def test_writes_each_report_once_then_nothing(fake: FakeReportsApi) -> None:
    findings = population(5, 3)
    writer = ReportWriter()
    assert writer.sync(API, findings) == 6
    assert sorted(fake.objects) == sorted(report_path(ns) for ns in ["", *(f"ns-{n}" for n in range(5))])
    assert writer.settled
    fake.reset()
    assert writer.sync(API, list(reversed(findings))) == 0
    assert fake.calls == []  # compared with what was written: no request at all


def test_a_restarted_writer_reads_the_live_reports_a_page_at_a_time_and_writes_nothing(
    fake: FakeReportsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    findings = population(7, 2)
    ReportWriter().sync(API, findings)
    monkeypatch.setattr(reports_module, "LIST_PAGE_SIZE", 3)
    fake.reset()
    assert ReportWriter().sync(API, findings) == 0
    assert fake.writes() == []
    # 7 Reports in pages of 3, 1 ClusterReport in one page
    assert [method for method, _ in fake.calls] == ["GET"] * 4


def test_only_the_changed_scopes_are_rendered(fake: FakeReportsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = population(20, 3)
    writer = ReportWriter()
    writer.sync(API, findings)
    rendered: list[str] = []

    def counted_render(namespace: str, *args: Any) -> dict[str, Any]:
        rendered.append(namespace)
        return render_report(namespace, *args)

    monkeypatch.setattr(reports_module, "render_report", counted_render)
    fake.reset()
    changed = [f for f in findings if (f.namespace, f.object.name) != ("ns-4", "b-0")]
    assert writer.sync(API, changed, scopes={"ns-4"}) == 1
    assert rendered == ["ns-4"]
    assert fake.writes() == [("PATCH", report_path("ns-4"))]
    assert [r["resources"][0]["name"] for r in fake.objects[report_path("ns-4")]["results"]] == ["b-1", "b-2"]


def test_a_scope_whose_findings_are_gone_loses_its_report(fake: FakeReportsApi) -> None:
    writer = ReportWriter()
    writer.sync(API, population(3, 1))
    fake.reset()
    remaining = [f for f in population(3, 1) if f.namespace != "ns-1"]
    assert writer.sync(API, remaining, scopes={"ns-1"}) == 1
    assert fake.writes() == [("DELETE", report_path("ns-1"))]
    assert writer.sync(API, remaining, scopes={"ns-1"}) == 0


def test_a_write_budget_leaves_the_rest_pending(fake: FakeReportsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = population(10, 1)
    rendered: list[str] = []

    def counted_render(namespace: str, *args: Any) -> dict[str, Any]:
        rendered.append(namespace)
        return render_report(namespace, *args)

    monkeypatch.setattr(reports_module, "render_report", counted_render)
    writer = ReportWriter()
    assert writer.sync(API, findings, max_writes=4) == 4
    assert (writer.settled, writer.pending) == (False, True)
    assert writer.sync(API, findings, scopes=(), max_writes=4) == 4
    assert writer.sync(API, findings, scopes=(), max_writes=4) == 3
    assert (writer.settled, writer.pending) == (True, False)
    assert len(fake.objects) == 11
    assert sorted(rendered) == sorted({f.namespace for f in findings})  # each scope once across the steps
    fake.reset()
    assert writer.sync(API, findings, scopes=()) == 0
    assert fake.calls == []


def test_a_budgeted_step_also_bounds_what_it_compares(fake: FakeReportsApi, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = population(40, 1)
    ReportWriter().sync(API, findings)
    monkeypatch.setattr(reports_module, "COMPARES_PER_WRITE", 5)
    fake.reset()
    restarted = ReportWriter()  # every report unchanged: no write, only comparisons
    steps: list[int] = []
    while not steps or not restarted.settled:
        steps.append(restarted.sync(API, findings, scopes=(), max_writes=2))
    assert steps == [0, 0, 0, 0, 0]  # 41 reports, 10 compared per step
    assert fake.writes() == []


def test_pending_scopes_accumulate_across_calls(fake: FakeReportsApi) -> None:
    findings = population(3, 2)
    writer = ReportWriter()
    writer.sync(API, findings)
    changed = [f for f in findings if f.object.name != "b-1"]
    writer.changed({"ns-0"})
    writer.changed({"ns-2"})
    fake.reset()
    assert writer.sync(API, changed, scopes=()) == 2
    assert sorted(path for _, path in fake.writes()) == sorted([report_path("ns-0"), report_path("ns-2")])
    assert writer.sync(API, changed, scopes=None) == 1  # ns-1 was never marked: a full pass finds it


def test_nothing_is_requested_while_the_crds_are_not_served(fake: FakeReportsApi) -> None:
    writer = ReportWriter()
    writer.available = False
    assert writer.sync(API, population(3, 1)) == 0
    assert fake.calls == []
    assert not writer.settled
    writer.available = True
    assert writer.sync(API, population(3, 1), scopes=()) == 4  # what was pending meanwhile


def test_a_missing_crd_is_one_warning_then_a_fresh_read(fake: FakeReportsApi, caplog: pytest.LogCaptureFixture) -> None:
    fake.served = False
    writer = ReportWriter()
    with caplog.at_level(logging.WARNING):
        assert writer.sync(API, population(2, 1)) == 0
        assert writer.sync(API, population(2, 1)) == 0
    assert len([r for r in caplog.records if "not served" in r.getMessage()]) == 1
    fake.served = True
    assert writer.sync(API, population(2, 1)) == 3


def test_an_unreachable_api_server_is_not_an_exception_and_logs_once(
    fake: FakeReportsApi, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ReportWriter()
    writer.sync(API, population(2, 1))
    fake.failure = urllib3.exceptions.MaxRetryError(None, "/", reason=ConnectionRefusedError())  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(5):
                assert writer.sync(API, [finding("ns-0", "new")], scopes={"ns-0"}) == 0
        assert not writer.settled
        assert len(caplog.records) <= 1, [r.getMessage() for r in caplog.records]
    finally:
        OUTAGE.reset()
    fake.failure = None
    fake.reset()
    # Back: the live reports are read again and every scope compared, so the change made meanwhile is written.
    assert writer.sync(API, [finding("ns-0", "new")], scopes=()) == 3  # ns-0 patched, ns-1 and cluster deleted
    assert fake.calls[0][0] == "GET"


def test_a_foreign_report_is_left_alone(fake: FakeReportsApi) -> None:
    foreign = {"metadata": {"name": "access-hygiene", "labels": {"app.kubernetes.io/managed-by": "kyverno"}}}
    fake.objects[report_path("ns-0")] = foreign
    writer = ReportWriter()
    assert writer.sync(API, population(1, 1)) == 1  # the ClusterReport; ns-0's create is refused (409)
    assert writer.sync(API, []) == 1  # the ClusterReport deleted; the foreign one is not ours
    assert fake.objects == {report_path("ns-0"): foreign}
    assert OWNED_SELECTOR.startswith("app.kubernetes.io/managed-by=")


def test_the_writer_keeps_digests_not_reports(fake: FakeReportsApi) -> None:
    """What the issue measured (~100 MiB at 42,600 findings): the writer held every rendered result. Now what it
    keeps after a sync is a small fraction of what it wrote."""
    findings = population(200, 20)
    tracemalloc.start()
    try:
        writer = ReportWriter()
        before = tracemalloc.get_traced_memory()[0]
        writer.sync(API, findings)
        fake.objects.clear()  # the stand-in's copies are not the writer's
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    rendered = 201 * len(json.dumps(render_report("ns-0", population(1, 20))))
    assert held < rendered / 5, f"held {held} bytes after writing {rendered} bytes of reports"


def test_crd_established() -> None:
    established = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert crd_established({"metadata": {}, **established})
    assert not crd_established({"metadata": {"deletionTimestamp": "x"}, **established})
    assert not crd_established({"metadata": {}, "status": {"conditions": [{"type": "Established", "status": "False"}]}})
    assert not crd_established({"metadata": {}})
