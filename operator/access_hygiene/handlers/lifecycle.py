"""Operator start-up and shutdown: kopf settings, the API client, metrics, and the event-driven core."""

import logging
from typing import Any

import kopf

from access_hygiene import API_GROUP
from access_hygiene.handlers.runtime import Runtime, runtime_of
from access_hygiene.k8s.client import make_api_client, with_pool_size
from access_hygiene.k8s.controller import Controller, watched_kinds
from access_hygiene.k8s.usage_status import UsageMonitor
from access_hygiene.k8s.watch_cache import WatchCache, make_watch_client
from access_hygiene.metrics import Metrics, UsageMetrics
from access_hygiene.settings import OperatorSettings


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """All kopf tuning in one place: our own annotation/finalizer names, quiet events, sane timeouts."""
    settings.persistence.finalizer = f"{API_GROUP}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.execution.max_workers = 8
    settings.peering.standalone = True
    # kopf serves only AccessPolicies (the CRD is installed before the operator); its CRD watch would
    # re-scan API discovery on every CRD change, and a re-scan caught by shutdown retries against a
    # closed session until kopf gives up on "hung" tasks 5 s later.
    settings.scanning.disabled = True


@kopf.on.login(id="login")
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG (read now, not at import like the client library)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    operator_settings = OperatorSettings()
    metrics = Metrics(detailed=operator_settings.detailed_metrics)
    if operator_settings.metrics_port:
        metrics.serve(operator_settings.metrics_port, addr=operator_settings.metrics_addr)
    api = with_pool_size(make_api_client(), operator_settings.workers + 8)
    runtime = Runtime(settings=operator_settings, api=api, metrics=metrics)
    cache = WatchCache(make_watch_client(), watched_kinds(operator_settings))
    if operator_settings.audit_webhook_enabled:  # continuous mode: audit webhook -> status.unusedRules, metrics
        usage_metrics = UsageMetrics(metrics.registry, detailed=operator_settings.detailed_metrics)
        try:  # before the watches and the controller: a bad certificate or a taken port stops the operator
            runtime.usage = UsageMonitor(runtime.api, cache.state, operator_settings, usage_metrics)
            runtime.usage.start()
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            raise kopf.PermanentError(f"The audit webhook could not start: {error}") from error
    runtime.controller = Controller(runtime.api, cache, operator_settings, metrics)
    runtime.controller.start()
    memo["runtime"] = runtime


@kopf.on.cleanup(id="shutdown")
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if runtime is None:
        return
    if runtime.usage is not None:
        await runtime.usage.stop()
    await runtime_of(memo).controller.stop()
    runtime.metrics.shutdown()  # the HTTP server and the background builder thread
    runtime.api.close()
