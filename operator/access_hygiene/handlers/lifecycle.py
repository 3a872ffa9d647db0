"""Operator start-up and shutdown: kopf settings, the API client, metrics, and the event-driven core."""

import asyncio
import dataclasses
import logging
import os
import socket
from typing import Any

import aiohttp
import kopf

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.engine.leadership.lease import process_identity
from access_hygiene.handlers.runtime import Runtime, runtime_of
from access_hygiene.k8s.access_grants import ACCESS_WATCHES, AccessController
from access_hygiene.k8s.client import in_cluster_server, make_api_client, with_pool_size
from access_hygiene.k8s.controller import Controller, watched_kinds
from access_hygiene.k8s.errors import quiet_retry_logs
from access_hygiene.k8s.leader import LeaderElector, WriteGate, gated
from access_hygiene.k8s.usage_monitor import UsageMonitor
from access_hygiene.k8s.watch_cache import WatchCache, make_watch_client
from access_hygiene.metrics import AccessMetrics, Metrics, UsageMetrics
from access_hygiene.settings import OperatorSettings


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """All kopf tuning in one place: our own annotation/finalizer names, quiet events, sane timeouts."""
    settings.persistence.finalizer = f"{API_GROUP}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # kopf LISTs again each time its watch ends: one AccessPolicy LIST an hour while idle, not one every 5 min.
    settings.watching.server_timeout = 3600
    settings.watching.client_timeout = 3660
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.execution.max_workers = 8
    settings.peering.standalone = True
    # kopf serves only AccessPolicies (the CRD is installed before the operator); its CRD watch would
    # re-scan API discovery on every CRD change, and a re-scan caught by shutdown retries against a
    # closed session until kopf gives up on "hung" tasks 5 s later.
    settings.scanning.disabled = True


# kopf's own session opens a connection per concurrent request, without limit, and each TLS connection holds a
# 256 KiB buffer: at start-up kopf patches a finalizer onto every AccessPolicy at once, and 1,000 policies cost
# ~100 MiB of RSS that never came back. kopf's traffic is small (one watch, finalizers, events): a few suffice.
KOPF_CONNECTIONS = 8


@kopf.on.login(id="login")
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """In-cluster service account first, then $KUBECONFIG (read now, not at import like the client library)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    server = in_cluster_server(os.environ)
    if info is not None and server:  # the kubelet's address of the API server, as the kubernetes client uses
        info = dataclasses.replace(info, server=server)
    info = info or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
        aiohttp_session=bounded_session(info),
    )


def bounded_session(info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
    """The session kopf would build from `info`, with a bounded connection pool."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),  # basic auth or the bearer token, as kopf sets them
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    quiet_retry_logs()  # an outage is one line and a metric, not a line per retried request
    operator_settings = OperatorSettings()
    metrics = Metrics(detailed=operator_settings.detailed_metrics)
    if operator_settings.metrics_port:
        metrics.serve(operator_settings.metrics_port, addr=operator_settings.metrics_addr)
    # Every write of the operator passes one gate: open on the leader only (docs/ha.md).
    gate = WriteGate(elected=operator_settings.leader_election_enabled)
    metrics.set_leading(not gate.elected)
    api = gated(with_pool_size(make_api_client(), operator_settings.workers + 8), gate)
    runtime = Runtime(settings=operator_settings, api=api, metrics=metrics, gate=gate)
    managed = (MANAGED_BY_LABEL, MANAGED_BY_VALUE)  # counted for the managed-objects metric
    cache = WatchCache(make_watch_client(), watched_kinds(operator_settings), managed)
    if operator_settings.audit_webhook_enabled:  # continuous mode: audit webhook -> status.unusedRules, metrics
        usage_metrics = UsageMetrics(metrics.registry, detailed=operator_settings.detailed_metrics)
        try:  # before the watches and the controller: a bad certificate or a taken port stops the operator
            runtime.usage = UsageMonitor(
                runtime.api, cache.state, operator_settings, usage_metrics, runtime.clock, gate
            )
            runtime.usage.start()
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            raise kopf.PermanentError(f"The audit webhook could not start: {error}") from error
    runtime.controller = Controller(runtime.api, cache, operator_settings, metrics, runtime.clock, gate)
    runtime.controller.start()
    access_api = gated(
        with_pool_size(make_api_client(), 16), gate
    )  # its own pool: a revocation never waits for a connection
    access_cache = WatchCache(make_watch_client(), ACCESS_WATCHES)
    runtime.access = AccessController(
        access_api, access_cache, cache.state, operator_settings, AccessMetrics(metrics.registry), runtime.clock
    )
    runtime.controller.extra_findings = runtime.access.findings
    runtime.access.on_findings_changed = runtime.controller.refresh_reports
    runtime.access.gate = gate
    runtime.access.start()
    if gate.elected:  # after the controller: its watches warm up while the election runs

        def started_leading() -> None:
            runtime.controller.started_leading()
            runtime.access.started_leading()

        runtime.elector = LeaderElector(
            make_api_client(),  # ungated: the Lease is written before this replica leads
            gate,
            operator_settings.operator_namespace,
            operator_settings.leader_election_lease_name,
            operator_settings.leader_election_identity or process_identity(socket.gethostname()),
            operator_settings.lease_timing,
            on_started_leading=started_leading,
            on_stopped_leading=runtime.controller.stopped_leading,
            clock=runtime.clock,
            annotations=advertised(operator_settings, runtime.usage),
        )
        if runtime.usage is not None:
            runtime.usage.leader_url = lambda: runtime.elector.holder_annotation(AUDIT_WEBHOOK_ANNOTATION)
        runtime.elector.start()
    memo["runtime"] = runtime


# kopf names the task that tells a watch stream the operator was paused "pause-waiter for <resource>".
KOPF_PAUSE_WAITER = "pause-waiter for "


async def stop_abandoned_pause_waiters() -> int:
    """kopf's watcher can be cancelled between two events of its watch stream (while it spawns the worker of an
    object it has not seen yet: a burst of new or changed AccessPolicies), which leaves the stream's async generator
    suspended and unclosed, and its pause-waiter task pending until the event loop closes; kopf then waits its fixed
    5 s for that "hung" task before cancelling it. Cleanup runs once every watcher has exited, so a pause-waiter still
    pending has nothing left to signal: stop it now. Returns how many there were."""
    current = asyncio.current_task()
    waiters = [
        task for task in asyncio.all_tasks()
        if task is not current and not task.done() and task.get_name().startswith(KOPF_PAUSE_WAITER)
    ]  # fmt: skip
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    return len(waiters)


@kopf.on.cleanup(id="shutdown")
async def shutdown(memo: kopf.Memo, logger: Any, **_: Any) -> None:
    stopped = await stop_abandoned_pause_waiters()
    if stopped:
        logger.debug(f"Stopped {stopped} pause-waiter task(s) of watch streams kopf left open.")
    runtime = memo.get("runtime")
    if runtime is None:
        return
    if runtime.elector is not None:  # hand over first: a successor starts at once, not a lease term later
        await hand_over(runtime.elector, runtime.gate, runtime.metrics)
    if runtime.usage is not None:
        await runtime.usage.stop()
    if runtime.access is not None:
        await runtime.access.stop()
        runtime.access.api.close()
    await runtime_of(memo).controller.stop()
    runtime.metrics.shutdown()  # the HTTP server and the background builder thread
    runtime.api.close()


AUDIT_WEBHOOK_ANNOTATION = f"{API_GROUP}/audit-webhook"


def advertised(settings: OperatorSettings, usage: UsageMonitor | None) -> dict[str, str]:
    """What this replica puts on the Lease while it leads: where standbys relay audit batches."""
    if usage is None or not settings.audit_webhook_advertise_host:
        return {}
    host = settings.audit_webhook_advertise_host
    host = f"[{host}]" if ":" in host else host
    return {AUDIT_WEBHOOK_ANNOTATION: f"https://{host}:{usage.server.port}/audit"}


# How long a handover waits for writes already sent (bounded by their request timeout in the worst case).
HANDOVER_DRAIN_SECONDS = 5.0


async def hand_over(elector: LeaderElector, gate: WriteGate, metrics: Metrics) -> None:
    """Stop writing and stop exporting as the leader, let the writes in flight land, then release the Lease: no
    write of ours follows it, and the successor's findings are never scraped beside ours (a rolling upgrade)."""
    await elector.stop()
    gate.close(final=True)
    metrics.set_leading(False)
    if not await asyncio.to_thread(gate.wait_drained, HANDOVER_DRAIN_SECONDS):
        logging.getLogger(__name__).warning("Writes still in flight at shutdown; the Lease is left to expire.")
        return
    await asyncio.to_thread(elector.release)
