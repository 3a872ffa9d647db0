"""AccessPolicy deletion. Create, update and repair are event-driven in k8s/controller.py, fed by the
watch cache; kopf keeps the finalizer so cluster-scoped objects (which have no owner GC) are removed."""

import time
from typing import Any

import kopf

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.handlers.runtime import runtime_of
from access_hygiene.k8s.errors import api_errors_as_kopf

PLURAL = "accesspolicies"


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, id="policy-cleanup")
async def on_policy_delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    runtime = runtime_of(memo)
    started = time.monotonic()
    with api_errors_as_kopf("AccessPolicy cleanup"):
        deleted = await runtime.controller.cleanup_policy(dict(body))
    runtime.metrics.observe_reconcile("policy-cleanup", "success", time.monotonic() - started)
    logger.info(f"AccessPolicy deleted; removed {deleted} generated object(s).")
