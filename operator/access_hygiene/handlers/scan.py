"""The periodic full scan that feeds the metrics (violations, capabilities, controls, exemptions)."""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from access_hygiene.handlers.runtime import runtime_of
from access_hygiene.k8s.scan import managed_object_counts, policy_state_counts, scan_cluster

logger = logging.getLogger(__name__)


async def scan_forever(memo: kopf.Memo) -> None:
    runtime = runtime_of(memo)
    while True:
        try:
            snapshot, result = await asyncio.to_thread(scan_cluster, runtime.api, runtime.settings, datetime.now(UTC))
        except Exception:  # a failed scan must not stop the next one; the metric shows staleness
            logger.exception("Cluster scan failed; retrying after the scan interval.")
            runtime.metrics.observe_reconcile("scan", "error", 0.0)
        else:
            runtime.metrics.publish_scan(result)
            runtime.metrics.set_managed_objects(managed_object_counts(snapshot))
            runtime.metrics.set_policies(policy_state_counts(snapshot))
            runtime.metrics.observe_reconcile("scan", "success", result.duration_seconds)
            memo["last_scan"] = result
        await asyncio.sleep(runtime.settings.scan_interval_seconds)


@kopf.on.startup(id="start-scanner")
async def start_scanner(memo: kopf.Memo, **_: Any) -> None:
    memo["scanner"] = asyncio.create_task(scan_forever(memo), name="access-hygiene-scanner")


@kopf.on.cleanup(id="stop-scanner")
async def stop_scanner(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("scanner")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
