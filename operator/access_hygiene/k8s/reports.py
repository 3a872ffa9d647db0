"""Writing findings as OpenReports objects (Report per namespace, ClusterReport) and installing their CRDs.

ReportWriter.sync is the one entry point: render the reports of the scopes whose findings changed, write the ones
that differ from what it last wrote or saw (zero writes when nothing changed) and delete stale reports it
owns (label app.kubernetes.io/managed-by=access-hygiene). It never touches a report it does not own:
an existing report of the same name without the label is left alone and logged.

Memory is bounded by one report, not by the cluster's findings: what was written is remembered as a digest of
its content, reports are rendered one scope at a time, and the live reports are read a page at a time.
It uses the synchronous client: call it from a thread (asyncio.to_thread) in handlers.
"""

import hashlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from access_hygiene import FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.k8s.crds import install_crd
from access_hygiene.k8s.errors import API_FAILURES, OUTAGE, api_error_message, is_connection_error
from access_hygiene.k8s.resources import ResourceType, request
from access_hygiene.k8s.watch_cache import Change, WatchCache, WatchSpec, crd_established
from access_hygiene.models.findings import Finding
from access_hygiene.render.reports import (
    CLUSTER_REPORT_KIND,
    DEFAULT_MAX_RESULTS,
    REPORT_KIND,
    REPORT_NAME,
    REPORTS_API_VERSION,
    render_report,
)

logger = logging.getLogger(__name__)

REPORT_TYPES = {
    REPORT_KIND: ResourceType(REPORTS_API_VERSION, REPORT_KIND, "reports", True),
    CLUSTER_REPORT_KIND: ResourceType(REPORTS_API_VERSION, CLUSTER_REPORT_KIND, "clusterreports", False),
}
# The CustomResourceDefinitions that must be served before a report is read or written.
REPORT_CRD_NAMES = tuple(f"{rtype.plural}.{REPORTS_API_VERSION.split('/')[0]}" for rtype in REPORT_TYPES.values())
CRD_API_VERSION, CRD_KIND = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
OWNED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# The parts of a report the writer sets; the rest (status, managedFields, ...) belongs to the server.
_CONTENT_KEYS = ("source", "configuration", "summary", "results")
# Live reports are read this many at a time: a page of full reports, not every report of the cluster at once.
LIST_PAGE_SIZE = 100
# A budgeted step (max_writes) also stops after comparing this many reports per write allowed: a restart finds most
# reports unchanged, and rendering all of them at once would hold the interpreter for a second or two.
COMPARES_PER_WRITE = 8

ReportKey = tuple[str, str, str]  # kind, namespace, name
Manifest = dict[str, Any]
Digest = bytes
EVERY_SCOPE = None  # `scopes` value: every namespace and the cluster scope


def report_key(manifest: Manifest) -> ReportKey:
    meta = manifest["metadata"]
    return (str(manifest["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def scope_key(namespace: str) -> ReportKey:
    """The key of the report of a scope ("" the cluster scope)."""
    return (REPORT_KIND if namespace else CLUSTER_REPORT_KIND, namespace, REPORT_NAME)


def report_content(manifest: Manifest) -> Manifest:
    """What decides whether a report must be rewritten: our labels/annotations and the report body."""
    meta = manifest.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return {
        "labels": {MANAGED_BY_LABEL: labels.get(MANAGED_BY_LABEL)},
        "annotations": {k: v for k, v in annotations.items() if k.startswith("accesshygiene.io/")},
        **{key: manifest.get(key) for key in _CONTENT_KEYS},
    }


def content_digest(manifest: Manifest) -> Digest:
    """A report's content, as what the writer keeps of it: 32 bytes instead of every result."""
    canonical = json.dumps(report_content(manifest), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


def _namespace_gone(error: kubernetes.client.ApiException) -> bool:
    message = api_error_message(error)
    return (error.status == 404 and "namespaces" in message) or (
        error.status == 403 and "is being terminated" in message
    )


class ReportsUnavailableError(Exception):
    """The openreports.io CRDs are not served by the API server."""


class ReportWriter:
    """Keeps the cluster's OpenReports objects equal to the latest findings, writing only what changed.

    What it last wrote is kept in memory as one digest per report; the first sync (and the first after an API
    error or `forget()`) reads the reports it owns to learn the live state instead. Scopes whose findings changed
    are collected (`sync(..., scopes=...)`) until a sync has brought their reports in line.

    `available` says whether the report CRDs are served (the operator watches them); while it is False, sync
    makes no request at all.
    """

    def __init__(self, max_results: int = DEFAULT_MAX_RESULTS) -> None:
        self.max_results = max_results
        self._written: dict[ReportKey, Digest] | None = None
        self._not_owned: set[ReportKey] = set()
        self._lock = threading.Lock()  # guards _pending: scopes are added from other threads
        self._pending: set[str] | None = EVERY_SCOPE  # scopes still to compare; None: every one
        self._warned_unavailable = False
        self._stale = False
        self.available = True
        self.settled = True  # False when the last sync did not bring the reports in line (try again later)

    def forget(self) -> None:
        """Re-read the live reports on the next sync (e.g. the CRDs went away, and their objects with them).
        Safe beside a running sync: it takes effect at the next one."""
        self._stale = True
        self.changed(EVERY_SCOPE)

    def changed(self, scopes: Collection[str] | None) -> None:
        """These scopes' findings changed (None: any may have): compare their reports at the next sync."""
        with self._lock:
            if scopes is EVERY_SCOPE or self._pending is EVERY_SCOPE:
                self._pending = EVERY_SCOPE
            else:
                self._pending |= set(scopes)

    @property
    def pending(self) -> bool:
        return self._pending is EVERY_SCOPE or bool(self._pending)

    def _take_pending(self) -> set[str] | None:
        with self._lock:
            pending, self._pending = self._pending, set()
        return pending

    def sync(
        self,
        api: kubernetes.client.ApiClient,
        findings: Sequence[Finding],
        scopes: Collection[str] | None = EVERY_SCOPE,
        max_writes: int | None = None,
    ) -> int:
        """Bring the reports of the changed scopes in line with `findings` (every current finding: only those of
        the scopes to compare are rendered). `scopes`: the scopes whose findings changed since the last call, on
        top of those still pending (None: every scope). `max_writes`: stop after that many writes (or
        COMPARES_PER_WRITE times as many reports compared), leaving the rest pending (settled is then False), so a
        long start-up write yields to fresher work.
        Returns the number of writes (apply + delete).

        Never raises for API errors: they are logged (an unreachable API server once, by the outage log), and
        the next sync starts from a fresh read.
        """
        self.changed(scopes)
        self.settled = False
        if not self.available:
            return 0  # the CRDs are not served: nothing to read or write until they are
        if self._stale:
            self._stale, self._written = False, None
        pending = self._take_pending()
        writes = 0
        compare: set[str] = set()
        done: set[str] = set()
        try:
            if self._written is None:
                self._written = self._observe(api)
                pending = EVERY_SCOPE
                self._warned_unavailable = False
            by_scope: dict[str, list[Finding]] = defaultdict(list)
            for finding in findings:
                if pending is EVERY_SCOPE or finding.namespace in pending:
                    by_scope[finding.namespace].append(finding)
            compare = set(by_scope) if pending is EVERY_SCOPE else set(pending)
            if pending is EVERY_SCOPE:  # reports written before whose scope has no finding left
                compare |= {namespace for (_, namespace, name) in self._written if name == REPORT_NAME}
            for namespace in sorted(compare):
                if max_writes is not None and (writes >= max_writes or len(done) >= max_writes * COMPARES_PER_WRITE):
                    break  # the rest at the next step: fresher work first
                writes += self._sync_scope(api, namespace, by_scope.get(namespace, ()))
                done.add(namespace)
            for key in sorted(k for k in self._written if k[2] != REPORT_NAME):  # not a name we write: stale
                self._delete(api, key)
                writes += 1
            self.settled = not (compare - done)
        except ReportsUnavailableError:
            if not self._warned_unavailable:
                logger.warning("OpenReports CRDs (openreports.io) are not served; reports are not written.")
                self._warned_unavailable = True
            self._written = None
        except API_FAILURES as error:
            if is_connection_error(error) or not isinstance(error, kubernetes.client.ApiException):
                OUTAGE.failed(error)  # one line for the outage, not one per sync
            else:
                logger.warning(f"Writing OpenReports objects failed: HTTP {error.status}: {api_error_message(error)}")
            self._written = None
        if not self.settled:  # what is left: every scope after a failure, else those not compared yet
            self.changed(EVERY_SCOPE if self._written is None else compare - done)
        return writes

    def _sync_scope(self, api: kubernetes.client.ApiClient, namespace: str, findings: Iterable[Finding]) -> int:
        """Write or delete the report of one scope when it differs from what was written: 0 or 1 write."""
        assert self._written is not None
        key = scope_key(namespace)
        findings = list(findings)
        if not findings:
            if key not in self._written:
                return 0
            self._delete(api, key)
            return 1
        if key in self._not_owned:
            return 0
        manifest = render_report(namespace, findings, self.max_results)
        digest = content_digest(manifest)
        if self._written.get(key) == digest:
            return 0
        if not self._write(api, key, manifest, exists=key in self._written):
            return 0
        self._written[key] = digest
        return 1

    def _observe(self, api: kubernetes.client.ApiClient) -> dict[ReportKey, Digest]:
        live: dict[ReportKey, Digest] = {}
        for kind, rtype in REPORT_TYPES.items():
            token = ""
            while True:
                query = {"labelSelector": OWNED_SELECTOR, "limit": str(LIST_PAGE_SIZE)}
                if token:
                    query["continue"] = token
                try:
                    page = request(api, "GET", rtype.path(), query=query)
                except kubernetes.client.ApiException as error:
                    if error.status == 404:
                        raise ReportsUnavailableError from error
                    raise
                for item in page.get("items") or []:
                    item["kind"] = kind
                    live[report_key(item)] = content_digest(item)
                token = str((page.get("metadata") or {}).get("continue") or "")
                if not token:
                    break
        self._not_owned.clear()
        return live

    def _write(self, api: kubernetes.client.ApiClient, key: ReportKey, manifest: Manifest, *, exists: bool) -> bool:
        kind, namespace, name = key
        rtype = REPORT_TYPES[kind]
        try:
            if exists:  # ours: server-side apply replaces our fields (results is an atomic list)
                query = {"fieldManager": FIELD_MANAGER, "force": "true"}
                request(api, "PATCH", rtype.path(namespace, name), query=query, body=manifest,
                        content_type="application/apply-patch+yaml")  # fmt: skip
            else:  # create, never take over: a report of that name may belong to someone else
                request(api, "POST", rtype.path(namespace), query={"fieldManager": FIELD_MANAGER}, body=manifest)
        except kubernetes.client.ApiException as error:
            if error.status == 409 and not exists:
                logger.warning(f"{kind} {namespace}/{name} exists and is not managed by access-hygiene; left alone.")
                self._not_owned.add(key)
                return False
            if namespace and _namespace_gone(error):  # deleted or terminating since the scan: nothing to report
                return False
            raise
        return True

    def _delete(self, api: kubernetes.client.ApiClient, key: ReportKey) -> None:
        assert self._written is not None
        kind, namespace, name = key
        try:
            request(api, "DELETE", REPORT_TYPES[kind].path(namespace, name))
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
        del self._written[key]


class ReportCrdWatch:
    """Whether the OpenReports CRDs are served, from one lean watch per CRD (field selector on its name): the
    report kinds are read only once both are, instead of a LIST that fails with 404 every few minutes.

    `on_change(served)` is called from a watch thread whenever a CRD changes (and once both watches have synced).
    """

    def __init__(self, api: kubernetes.client.ApiClient, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change
        self._caches = [
            WatchCache(api, [WatchSpec(CRD_API_VERSION, CRD_KIND, field_selector=f"metadata.name={name}")])
            for name in REPORT_CRD_NAMES
        ]
        for cache in self._caches:
            cache.state.set_listener(self._changed)
        self._synced_announced = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        for cache in self._caches:
            cache.start()
        threading.Thread(target=self._announce_when_synced, name="watch-report-crds", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        for cache in self._caches:
            cache.stop()

    @property
    def served(self) -> bool:
        return all(any(crd_established(crd) for crd in cache.state.objects(CRD_KIND)) for cache in self._caches)

    def _announce_when_synced(self) -> None:
        """A CRD absent at start brings no change to listen to: say what the first LISTs found."""
        for cache in self._caches:
            while not cache.state.wait_synced(1.0):
                if self._stopping.is_set():
                    return
        with self._lock:
            self._synced_announced = True
        self._on_change(self.served)

    def _changed(self, _: list[Change]) -> None:
        with self._lock:
            if not self._synced_announced:
                return  # the first announcement (above) covers it
        self._on_change(self.served)


def load_report_crds(paths: Iterable[Path]) -> list[Manifest]:
    """The CustomResourceDefinitions in the given YAML files (crds/openreports.io_*.yaml)."""
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def install_report_crds(api: kubernetes.client.ApiClient, paths: Iterable[Path]) -> list[str]:
    """Install (server-side apply) the OpenReports CRDs and wait until they are served. Returns their names."""
    names = []
    for crd in load_report_crds(paths):
        install_crd(api, crd)
        names.append(str(crd["metadata"]["name"]))
    return names
