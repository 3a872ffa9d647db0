"""One reconcile of an enforce-mode namespace, called as the controller calls it (with the audit's findings), writes
the controls and the summary that describes the namespace after them: no second pass (a watch echo and another
reconcile) is needed for the summary. At start-up at scale that second pass was 2,000 more patches, reconciles and
re-audits after every policy was Ready (issue 26). No operator runs in this module: the calls are the only writers."""

import json
import uuid
from datetime import UTC, datetime

import kubernetes
import pytest

from access_hygiene.engine.audit.incremental import audit_scopes
from access_hygiene.k8s.namespace_sync import SUMMARY_ANNOTATION, sync_namespace
from access_hygiene.k8s.snapshot_loader import load_snapshot
from access_hygiene.settings import OperatorSettings
from tests.cluster.conftest import wait_for
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster


def test_one_enforce_pass_writes_the_controls_and_their_summary(cluster: Cluster) -> None:
    name = f"pass-{uuid.uuid4().hex[:8]}"
    settings = OperatorSettings()
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"accesshygiene.io/mode": "enforce"}}})
        try:
            wait_for(
                lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items)
            )

            def reconcile() -> int:
                now = datetime.now(UTC)
                snapshot = load_snapshot(api)
                namespace = next(ns for ns in snapshot.namespaces if ns["metadata"]["name"] == name)
                findings = audit_scopes(snapshot, settings.audit_context(now=now), {name})[name].findings
                return sync_namespace(api, namespace, settings, now, snapshot, findings).writes

            assert reconcile() >= 3  # automount off, default deny, DNS, and the summary
            annotations = core.read_namespace(name).metadata.annotations or {}
            assert SUMMARY_ANNOTATION in annotations, "the first pass left the summary to a second one"
            summary = json.loads(annotations[SUMMARY_ANNOTATION])
            assert summary["pending"] == 0
            assert summary["controls"]["default-deny-ingress"]
            assert summary["controls"]["default-sa-automount-off"]
            # What the echo's re-audit and reconcile would do: nothing left to write, the summary among it.
            assert reconcile() == 0
        finally:
            core.delete_namespace(name)
