"""Writing findings as OpenReports objects (Report per namespace, ClusterReport) and installing their CRDs.

ReportWriter.sync is the one entry point: render the reports for the current findings, write the ones
that differ from what it last wrote (zero writes when nothing changed) and delete stale reports it
owns (label app.kubernetes.io/managed-by=access-hygiene). It never touches a report it does not own:
an existing report of the same name without the label is left alone and logged.
It uses the synchronous client: call it from a thread (asyncio.to_thread) in handlers.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from access_hygiene import FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.k8s.crds import install_crd
from access_hygiene.k8s.errors import api_error_message
from access_hygiene.k8s.resources import ResourceType, request
from access_hygiene.models.findings import Finding
from access_hygiene.render.reports import (
    CLUSTER_REPORT_KIND,
    DEFAULT_MAX_RESULTS,
    REPORT_KIND,
    REPORTS_API_VERSION,
    render_reports,
)

logger = logging.getLogger(__name__)

REPORT_TYPES = {
    REPORT_KIND: ResourceType(REPORTS_API_VERSION, REPORT_KIND, "reports", True),
    CLUSTER_REPORT_KIND: ResourceType(REPORTS_API_VERSION, CLUSTER_REPORT_KIND, "clusterreports", False),
}
OWNED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# The parts of a report the writer sets; the rest (status, managedFields, ...) belongs to the server.
_CONTENT_KEYS = ("source", "configuration", "summary", "results")

ReportKey = tuple[str, str, str]  # kind, namespace, name
Manifest = dict[str, Any]


def report_key(manifest: Manifest) -> ReportKey:
    meta = manifest["metadata"]
    return (str(manifest["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


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


def _namespace_gone(error: kubernetes.client.ApiException) -> bool:
    message = api_error_message(error)
    return (error.status == 404 and "namespaces" in message) or (
        error.status == 403 and "is being terminated" in message
    )


class ReportsUnavailableError(Exception):
    """The openreports.io CRDs are not served by the API server."""


UNAVAILABLE_RECHECK_SECONDS = 300.0


class ReportWriter:
    """Keeps the cluster's OpenReports objects equal to the latest findings, writing only what changed.

    What it last wrote is kept in memory; the first sync (and the first after an API error or
    `forget()`) lists the reports it owns to learn the live state instead.
    """

    def __init__(self, max_results: int = DEFAULT_MAX_RESULTS) -> None:
        self.max_results = max_results
        self._written: dict[ReportKey, Manifest] | None = None  # key -> report_content
        self._not_owned: set[ReportKey] = set()
        self._warned_unavailable = False
        self._unavailable_until = 0.0  # monotonic time before which a missing CRD is not looked for again
        self.settled = True  # False when the last sync did not bring the reports in line (try again later)

    def forget(self) -> None:
        """Re-read the live reports on the next sync (e.g. from a periodic drift check)."""
        self._written = None

    def sync(self, api: kubernetes.client.ApiClient, findings: Sequence[Finding]) -> int:
        """Bring the reports in line with `findings`. Returns the number of writes (apply + delete).

        Never raises for API errors: they are logged, and the next sync starts from a fresh list.
        """
        self.settled = False
        if time.monotonic() < self._unavailable_until:
            return 0  # the CRDs were missing a moment ago: no LIST per findings change, look again later
        desired = {report_key(m): m for m in render_reports(findings, self.max_results)}
        writes = 0
        try:
            if self._written is None:
                self._written = self._observe(api)
                self._warned_unavailable = False
            for key, manifest in desired.items():
                content = report_content(manifest)
                if self._written.get(key) == content or key in self._not_owned:
                    continue
                if self._write(api, key, manifest, exists=key in self._written):
                    self._written[key] = content
                    writes += 1
            for key in sorted(set(self._written) - set(desired)):
                kind, namespace, name = key
                self._delete(api, kind, name, namespace)
                del self._written[key]
                writes += 1
            self.settled = True
        except ReportsUnavailableError:
            if not self._warned_unavailable:
                logger.warning("OpenReports CRDs (openreports.io) are not installed; reports are not written.")
                self._warned_unavailable = True
            self._written = None
            self._unavailable_until = time.monotonic() + UNAVAILABLE_RECHECK_SECONDS
        except kubernetes.client.ApiException as error:
            logger.warning("Writing OpenReports objects failed: HTTP %s: %s", error.status, api_error_message(error))
            self._written = None
        return writes

    def _observe(self, api: kubernetes.client.ApiClient) -> dict[ReportKey, Manifest]:
        live: dict[ReportKey, Manifest] = {}
        for kind, rtype in REPORT_TYPES.items():
            try:
                page = request(api, "GET", rtype.path(), query={"labelSelector": OWNED_SELECTOR})
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    raise ReportsUnavailableError from error
                raise
            for item in page.get("items") or []:
                item["kind"] = kind
                live[report_key(item)] = report_content(item)
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
                logger.warning("%s %s/%s exists and is not managed by access-hygiene; left alone.",
                               kind, namespace, name)  # fmt: skip
                self._not_owned.add(key)
                return False
            if namespace and _namespace_gone(error):  # deleted or terminating since the scan: nothing to report
                return False
            raise
        return True

    def _delete(self, api: kubernetes.client.ApiClient, kind: str, name: str, namespace: str) -> None:
        try:
            request(api, "DELETE", REPORT_TYPES[kind].path(namespace, name))
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise


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
