"""Leader election on a coordination.k8s.io/v1 Lease, and the one gate every write of the operator passes.

Decisions are pure (engine/leadership/lease.py); this module reads and writes the Lease and keeps the gate:
`GatedApiClient` is the API client everything in k8s/ writes through, and it refuses a write (NotLeaderError) unless
this replica holds the Lease and its fence (the start of its last successful renewal + renew_deadline) has not
passed. The gate is judged by the clock at the moment of each write, not by a flag the election loop sets, so a
process that was paused (SIGSTOP, a long GC, a partition) and resumes past its fence writes nothing until it has
renewed or re-acquired the Lease. The Lease itself is written through a separate, ungated client.

A standby keeps no timer of its own: between attempts it watches the one Lease (timeoutSeconds = the retry
period), so a released Lease (a leader's SIGTERM) is taken within a round trip, and an expired one on the first
attempt after expiry (client-go's semantics: expiry counts from when this process saw the record change).
"""

import asyncio
import contextlib
import json
import logging
import math
import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import kubernetes
import urllib3

from access_hygiene.clock import SYSTEM_CLOCK, Clock, parse_instant
from access_hygiene.engine.leadership.lease import (
    JITTER_FACTOR,
    Action,
    LeaseRecord,
    LeaseTiming,
    Observation,
    decide,
    fence,
    held_by_other,
    observe,
    released,
    standby_wait,
)
from access_hygiene.k8s.errors import API_FAILURES, NotLeaderError
from access_hygiene.k8s.resources import open_response, request
from access_hygiene.k8s.watch_cache import _lines

logger = logging.getLogger(__name__)

LEASE_API = "/apis/coordination.k8s.io/v1"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POSTs of these kinds ask a question (who am I, may I) and store nothing: not writes.
REVIEW_SUFFIX = "reviews"
_JITTER = random.Random()


class WriteGate:
    """Open while this replica leads and its fence lies ahead; counts writes in flight so a handover can wait for
    them. Without election (one replica, `leader_election_enabled: false`) it is always open."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, *, elected: bool = True) -> None:
        self.clock = clock
        self.elected = elected
        self._fence: datetime | None = None
        self._final = False  # closed for good (shutdown): a renewal finishing late cannot reopen it
        self._inflight = 0
        self._changed = threading.Condition()

    def is_open(self) -> bool:
        if not self.elected:
            return True
        fence_at = self._fence
        return fence_at is not None and self.clock.now() < fence_at

    def open_until(self, fence_at: datetime) -> None:
        with self._changed:
            if not self._final:
                self._fence = fence_at

    def close(self, *, final: bool = False) -> None:
        with self._changed:
            self._fence = None
            self._final = self._final or final

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        with self._changed:
            if not self.is_open():
                raise NotLeaderError(f"{what}: not written, this replica does not lead")
            self._inflight += 1
        try:
            yield
        finally:
            with self._changed:
                self._inflight -= 1
                self._changed.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until no write is in flight (after close(): none can start)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._inflight == 0, timeout)


def is_write(method: str, url: str) -> bool:
    path = url.split("?", 1)[0].rstrip("/")
    return method.upper() in WRITE_METHODS and not path.endswith(REVIEW_SUFFIX)


class GatedApiClient(kubernetes.client.ApiClient):
    """The API client every operator write goes through: a write passes only an open gate."""

    def __init__(self, configuration: kubernetes.client.Configuration, gate: WriteGate) -> None:
        super().__init__(configuration)
        self.gate = gate

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if not is_write(method, url):
            return super().call_api(method, url, *args, **kwargs)
        with self.gate.writing(f"{method} {url.split('?', 1)[0]}"):
            return super().call_api(method, url, *args, **kwargs)


def gated(api: kubernetes.client.ApiClient, gate: WriteGate) -> GatedApiClient:
    """A client with api's configuration (server, credentials, pool size) whose writes pass the gate."""
    return GatedApiClient(api.configuration, gate)


# The Lease as the API serves it ----------------------------------------------------------------------------


def _micro_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    acquire, renew = spec.get("acquireTime"), spec.get("renewTime")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=parse_instant(acquire) if acquire else None,
        renew_time=parse_instant(renew) if renew else None,
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def lease_manifest(
    namespace: str,
    name: str,
    record: LeaseRecord,
    resource_version: str = "",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": dict(annotations or {})}
    if resource_version:
        metadata["resourceVersion"] = resource_version  # optimistic concurrency: a lost race is a 409
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder or None,
            "leaseDurationSeconds": record.lease_duration_seconds,
            "acquireTime": _micro_time(record.acquire_time),
            "renewTime": _micro_time(record.renew_time),
            "leaseTransitions": record.transitions,
        },
    }


class LeaderElector:
    """Campaigns for the Lease, renews it while leading, releases it on shutdown; drives the gate and tells the
    operator when it starts and stops leading (callbacks run on the event loop)."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,  # ungated: the Lease is the one object written before leading
        gate: WriteGate,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        clock: Clock = SYSTEM_CLOCK,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.gate = gate
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        # What the holder advertises on the Lease (the audit webhook's address, for standbys to relay to).
        self.annotations = dict(annotations or {})
        self._holder_annotations: dict[str, str] = {}
        self._observation: Observation | None = None
        self._observed_once = False
        self._standing_by_for = ""  # the holder last announced in the log while standing by
        self.leading = False
        self.transitions = 0  # times this process started leading
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        # Held by an attempt in flight (a worker thread outlives the cancelled task): release() waits for it, so it
        # writes over the latest resourceVersion.
        self._attempt = threading.Lock()

    @property
    def collection(self) -> str:
        return f"{LEASE_API}/namespaces/{self.namespace}/leases"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-hygiene-leader-election")

    async def stop(self) -> None:
        """Stop campaigning; the caller closes the gate, lets writes drain, then calls release()."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                leads = await asyncio.to_thread(self._try_acquire_or_renew)
            except API_FAILURES as error:
                logger.warning(f"Lease {self.namespace}/{self.name}: {type(error).__name__}: {error}")
                leads = self.gate.is_open()  # keep leading until the fence passes, then stop
            self._transition(leads)
            self._announce_standby(leads)
            if leads:
                await asyncio.sleep(self.timing.retry_period)
            else:
                retry = self.timing.retry_period * (1.0 + _JITTER.uniform(0.0, JITTER_FACTOR - 1.0))
                wait = standby_wait(self.identity, self._observation, self.clock.now(), retry)
                if wait < 1.0:  # the term runs out first, sooner than a watch's shortest timeout (1 s)
                    await asyncio.sleep(wait)
                else:
                    await asyncio.to_thread(self._wait_for_change, wait)

    def _transition(self, leads: bool) -> None:
        if leads and not self.leading:
            self.leading = True
            self.transitions += 1
            logger.info(f"Leading (Lease {self.namespace}/{self.name}, identity {self.identity}).")
            self._on_started()
        elif not leads and self.leading:
            self.leading = False
            self.gate.close()
            logger.warning(f"No longer leading (Lease {self.namespace}/{self.name}): writes stop.")
            self._on_stopped()

    def _announce_standby(self, leads: bool) -> None:
        """Log once per holder that this replica stands by: from then on it counts the holder's term (from when
        this process first saw the record, so a leader lost before that is replaced a whole term later)."""
        observation = self._observation
        if leads or observation is None or not held_by_other(self.identity, observation, self.clock.now()):
            self._standing_by_for = ""
            return
        holder = observation.record.holder
        if holder != self._standing_by_for:
            self._standing_by_for = holder
            logger.info(
                f"Standing by: Lease {self.namespace}/{self.name} held by {holder}; taking it if not renewed "
                f"within {observation.record.lease_duration_seconds} s."
            )

    # Lease I/O (worker thread) --------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            lease = request(self.api, "GET", f"{self.collection}/{self.name}")
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            self._observation = None
        else:
            self._note(lease)
        self._observed_once = True

    def _note(self, lease: dict[str, Any]) -> None:
        metadata = lease.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        self._holder_annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
        self._observation = observe(self._observation, record_of(lease), version, self.clock.now())

    def holder_annotation(self, key: str) -> str | None:
        """What the current holder advertises under `key`, while another replica validly holds the Lease."""
        observation = self._observation
        if observation is None or not held_by_other(self.identity, observation, self.clock.now()):
            return None
        return self._holder_annotations.get(key)

    def _try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease and its fence was moved."""
        with self._attempt:
            if self._stopping.is_set():
                return self.gate.is_open()
            return self._attempt_once()

    def _attempt_once(self) -> bool:
        if not self._observed_once:
            self._read()
        for attempt in range(2):  # a conflict (someone wrote the Lease since we read it) costs one re-read
            started = self.clock.now()
            decision = decide(self.identity, self._observation, started, self.timing)
            if decision.action is Action.WAIT:
                return False
            assert decision.record is not None
            try:
                self._write(decision.action, decision.record)
            except kubernetes.client.ApiException as error:
                if error.status not in (404, 409) or attempt:
                    raise
                self._read()
                continue
            self.gate.open_until(fence(started, self.timing))
            return True
        return False

    def _write(self, action: Action, record: LeaseRecord) -> None:
        if action is Action.CREATE:
            body = lease_manifest(self.namespace, self.name, record, annotations=self.annotations)
            lease = request(self.api, "POST", self.collection, body=body)
        else:
            assert self._observation is not None
            body = lease_manifest(
                self.namespace, self.name, record, self._observation.resource_version, self.annotations
            )
            lease = request(self.api, "PUT", f"{self.collection}/{self.name}", body=body)
        self._note(lease)

    def _wait_for_change(self, seconds: float) -> None:
        """Watch the Lease until it changes or `seconds` pass (a standby's wait between attempts)."""
        if self._stopping.is_set():
            return
        if self._observation is None:  # no Lease yet: nothing to watch from
            self._stopping.wait(seconds)
            self._observed_once = False
            return
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={self.name}",
            "resourceVersion": self._observation.resource_version,
            # Whole seconds, rounded down: a watch that outlived the holder's term would delay the takeover.
            "timeoutSeconds": str(max(1, math.floor(seconds))),
        }
        try:
            response = open_response(self.api, "GET", self.collection, query=query, timeout=(5.0, seconds + 10.0))
        except API_FAILURES as error:
            logger.debug(f"Lease watch failed: {error}")
            self._stopping.wait(seconds)
            self._observed_once = False
            return
        try:
            for line in _lines(response):
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self._note(event.get("object") or {})
                    return
                self._observed_once = False  # DELETED, or ERROR (410 Gone): read again
                return
        except (urllib3.exceptions.HTTPError, OSError) as error:
            logger.debug(f"Lease watch ended: {error}")
        finally:
            response.release_conn()

    def release(self) -> bool:
        """Hand the Lease over at once (client-go's ReleaseOnCancel): called after the gate is closed and the
        writes in flight have drained. Returns whether a release was written."""
        with self._attempt:
            return self._release()

    def _release(self) -> bool:
        observation = self._observation
        if not self.leading or observation is None or observation.record.holder != self.identity:
            return False
        body = lease_manifest(
            self.namespace, self.name, released(observation.record, self.clock.now()), observation.resource_version
        )
        try:
            request(self.api, "PUT", f"{self.collection}/{self.name}", body=body)
        except API_FAILURES as error:  # the Lease then expires on its own
            logger.warning(f"Lease {self.namespace}/{self.name} not released: {error}")
            return False
        self.leading = False
        logger.info(f"Lease {self.namespace}/{self.name} released.")
        return True
