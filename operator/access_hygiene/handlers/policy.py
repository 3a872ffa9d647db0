"""AccessPolicy handlers: create/update/resume and the drift timer share one reconcile."""

import os
from datetime import UTC, datetime
from typing import Any

import kopf

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.handlers.runtime import observed, runtime_of
from access_hygiene.k8s.errors import api_errors_as_kopf
from access_hygiene.k8s.policy_sync import prune_policy_objects, sync_policy
from access_hygiene.reconcile.status import status_changed

PLURAL = "accesspolicies"
# Read at import because kopf needs the interval when the decorator runs.
DRIFT_INTERVAL = float(os.environ.get("ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS", "300"))


def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, handler: str) -> None:
    runtime = runtime_of(memo)
    with observed(runtime, handler) as outcome, api_errors_as_kopf("AccessPolicy reconcile"):
        last_scan = memo.get("last_scan")
        findings = last_scan.findings if last_scan is not None else ()
        result = sync_policy(runtime.api, body, runtime.settings, datetime.now(UTC), findings)
        outcome["value"] = result.outcome
        if status_changed(body.get("status"), result.status):
            patch.status.update(result.status)
        if result.writes:
            logger.info(f"AccessPolicy reconciled with {result.writes} write(s): {result.outcome}.")


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL, id="policy-resume")
@kopf.on.create(API_GROUP, API_VERSION, PLURAL, id="policy-create")
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, id="policy-update", field="spec")
def on_policy_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    reconcile(body, patch, memo, logger, "policy")


@kopf.timer(API_GROUP, API_VERSION, PLURAL, id="policy-drift", interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
def repair_policy_drift(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    reconcile(body, patch, memo, logger, "policy-drift")


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="policy-cleanup")
def on_policy_delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    runtime = runtime_of(memo)
    with observed(runtime, "policy-cleanup"), api_errors_as_kopf("AccessPolicy cleanup"):
        deleted = prune_policy_objects(runtime.api, body)
    logger.info(f"AccessPolicy deleted; removed {deleted} generated object(s).")
