"""Namespace hygiene: default SA automount off, default deny + DNS, kept so by events and a timer."""

import os
from datetime import UTC, datetime
from typing import Any

import kopf

from access_hygiene.handlers.runtime import observed, runtime_of
from access_hygiene.k8s import resources
from access_hygiene.k8s.errors import api_errors_as_kopf
from access_hygiene.k8s.namespace_sync import sync_namespace

DRIFT_INTERVAL = float(os.environ.get("ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS", "300"))


def reconcile_namespace(namespace: kopf.Body | dict[str, Any], memo: kopf.Memo, logger: Any, handler: str) -> None:
    runtime = runtime_of(memo)
    with observed(runtime, handler), api_errors_as_kopf("Namespace hygiene"):
        result = sync_namespace(runtime.api, namespace, runtime.settings, datetime.now(UTC))
    if result.writes:
        logger.info(f"Namespace hygiene applied with {result.writes} write(s) in {result.mode} mode.")


@kopf.on.resume("", "v1", "namespaces", id="namespace-resume")
@kopf.on.create("", "v1", "namespaces", id="namespace-create")
@kopf.on.update("", "v1", "namespaces", id="namespace-update", field="metadata.labels")
def on_namespace(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    reconcile_namespace(body, memo, logger, "namespace")


@kopf.timer("", "v1", "namespaces", id="namespace-drift", interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
def repair_namespace_drift(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    reconcile_namespace(body, memo, logger, "namespace-drift")


def _is_watched_change(name: str, labels: kopf.Labels, **_: Any) -> bool:
    return name == "default" or labels.get("app.kubernetes.io/managed-by") == "access-hygiene"


@kopf.on.event("", "v1", "serviceaccounts", id="default-sa-drift", when=_is_watched_change)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", id="networkpolicy-drift", when=_is_watched_change)
def on_controlled_object_event(namespace: str | None, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Someone touched the default SA or one of our NetworkPolicies: re-check that namespace now."""
    if not namespace:
        return
    runtime = runtime_of(memo)
    with api_errors_as_kopf("Namespace hygiene"):
        live = resources.get(runtime.api, "v1", "Namespace", namespace)
    if live is not None and not (live.get("metadata") or {}).get("deletionTimestamp"):
        reconcile_namespace(live, memo, logger, "namespace-event")
