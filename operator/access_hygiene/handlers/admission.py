"""Native admission policies: removed at start-up when admission is switched off; the just-in-time access
policies applied at start-up whatever the switch (render/access_admission.py). When it is on, the controller
writes them (k8s/controller.py): once its watch cache is synced, then only when an event or a passed exemption
expiry changes their parameters, and only the objects whose content changed (no timer, no LIST)."""

import asyncio
import logging
from typing import Any

import kopf

from access_hygiene.handlers.runtime import runtime_of
from access_hygiene.k8s.admission import apply_access_admission, delete_admission
from access_hygiene.k8s.errors import api_errors_as_kopf

logger = logging.getLogger(__name__)


@kopf.on.startup(id="admission-install")
async def remove_disabled_admission(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" not in memo:  # the "configure" start-up handler has not run yet
        raise kopf.TemporaryError("Waiting for the operator runtime.", delay=1)
    runtime = runtime_of(memo)
    if runtime.settings.admission_enabled:
        return
    with api_errors_as_kopf("Admission policies"):
        removed = await asyncio.to_thread(delete_admission, runtime.api, runtime.settings)
    if removed:
        logger.info(f"Admission policies removed ({removed} objects): admission is switched off.")


@kopf.on.startup(id="access-admission-install")
async def install_access_admission(memo: kopf.Memo, **_: Any) -> None:
    """The just-in-time access policies guard their own kinds: always on, whatever admission.enabled says."""
    if "runtime" not in memo:
        raise kopf.TemporaryError("Waiting for the operator runtime.", delay=1)
    runtime = runtime_of(memo)
    with api_errors_as_kopf("Just-in-time access admission policies"):
        applied = await asyncio.to_thread(apply_access_admission, runtime.api)
    if applied:
        logger.info(f"Just-in-time access admission policies applied ({applied} objects).")
