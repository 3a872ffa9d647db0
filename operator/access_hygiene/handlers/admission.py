"""Native admission policies: installed (or removed, when switched off) at start-up; re-applied with fresh
parameters (the operator's clock, owner exemptions, the grant ceiling, its own user name) on a timer and whenever
an exempted owner object changes."""

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from access_hygiene.engine.ground.exemptions import EXEMPT_ANNOTATION
from access_hygiene.handlers.runtime import runtime_of
from access_hygiene.k8s.admission import apply_admission, delete_admission
from access_hygiene.k8s.errors import api_errors_as_kopf

logger = logging.getLogger(__name__)


@kopf.on.startup(id="admission-install")
async def install_admission(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" not in memo:  # the "configure" start-up handler has not run yet
        raise kopf.TemporaryError("Waiting for the operator runtime.", delay=1)
    runtime = runtime_of(memo)
    with api_errors_as_kopf("Admission policies"):
        if not runtime.settings.admission_enabled:
            removed = await asyncio.to_thread(delete_admission, runtime.api, runtime.settings)
            if removed:
                logger.info(f"Admission policies removed ({removed} objects): admission is switched off.")
            return
        result = await asyncio.to_thread(apply_admission, runtime.api, runtime.settings, runtime.clock.now())
    logger.info(f"Admission policies applied for {len(result.rules)} rules ({result.pruned} stale pruned).")
    memo["admission_refresher"] = asyncio.create_task(refresh_forever(memo), name="access-hygiene-admission")


async def refresh_once(memo: kopf.Memo) -> None:
    """One re-apply at a time; the work is shielded and remembered so shutdown can wait for it (a thread
    cannot be cancelled, and one finishing after shutdown would re-create what a successor removed)."""
    runtime = runtime_of(memo)
    lock: asyncio.Lock = memo.setdefault("admission_lock", asyncio.Lock())
    async with lock:
        work = asyncio.ensure_future(
            asyncio.to_thread(apply_admission, runtime.api, runtime.settings, runtime.clock.now())
        )
        memo["admission_inflight"] = work
        await asyncio.shield(work)


async def refresh_forever(memo: kopf.Memo) -> None:
    runtime = runtime_of(memo)
    while True:
        await asyncio.sleep(runtime.settings.admission_refresh_seconds)
        try:
            await refresh_once(memo)
        except Exception:  # the next tick retries; a stale clock only delays an expiry by one interval
            logger.exception("Admission policies refresh failed; retrying after the interval.")


def _exempt_owner(annotations: kopf.Annotations, **_: Any) -> bool:
    return EXEMPT_ANNOTATION in annotations


async def on_owner_exemption(memo: kopf.Memo, **_: Any) -> None:
    """An exempted owner changed: the objects it creates need their owner-exemption entries now. (The
    deployment controller copies a Deployment's annotations to its ReplicaSets, so a new ReplicaSet of an
    exempted Deployment is admitted by its own exemption and its pods by this refresh.)"""
    if "runtime" in memo and runtime_of(memo).settings.admission_enabled:
        await refresh_once(memo)


# Watches only when admission is on (read at import, like the drift interval): ReplicaSets are many.
if os.environ.get("ACCESS_HYGIENE_ADMISSION_ENABLED", "").strip().lower() in ("1", "true", "yes", "on"):
    for _group, _plural in (("apps", "deployments"), ("apps", "replicasets"), ("batch", "cronjobs")):
        kopf.on.event(_group, "v1", _plural, id=f"admission-exemption-{_plural}", when=_exempt_owner)(
            on_owner_exemption
        )


@kopf.on.cleanup(id="admission-stop")
async def stop_refresher(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("admission_refresher")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    inflight = memo.get("admission_inflight")
    if inflight is not None:
        with contextlib.suppress(Exception):
            await inflight
