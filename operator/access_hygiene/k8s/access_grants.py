"""Just-in-time access, the part that talks to the API: watch the three kinds and the grant RoleBindings, decide
with engine/access/state.py, create the RoleBinding at start and delete it at expiry, write statuses and Events.

Why lean reflectors (k8s/watch_cache.py) and not kopf handlers: kopf writes its bookkeeping annotations onto every
object it handles (a write per request and approval the user owns) and spends ~1 ms per object per event; a
burst of 1,000 requests is a LIST and a watch here, and a no-op decision writes nothing. Timers are asyncio
handles set from each request's own times (startAt, approval time + duration), so a restart re-derives them; an
expiry is urgent work that goes before everything else queued, and its first step is the DELETE.

Only bindings this operator created for a request are touched: found by the request label, and deleted only when
their controller ownerReference is that request's uid (a binding of the same name that is not ours is reported,
never adopted: it is created with POST, never applied over).
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene import API_GROUP, API_VERSION, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.clock import SYSTEM_CLOCK, Clock
from access_hygiene.engine.access.leftovers import (
    LEFTOVER_RULE_ID,
    MAX_LEFTOVERS,
    Leftover,
    creatable_kinds,
    find_leftovers,
    leftover_findings,
    recorded_leftovers,
    removable_leftovers,
)
from access_hygiene.engine.access.state import (
    AccessEvent,
    GrantLimits,
    RequestDecision,
    decide_request,
    eligibility_status,
    format_time,
    revocation_due,
)
from access_hygiene.k8s import resources
from access_hygiene.k8s.errors import (
    API_FAILURES,
    OUTAGE,
    NotLeaderError,
    api_error_message,
    is_connection_error,
    is_transient,
)
from access_hygiene.k8s.events import EventRecorder
from access_hygiene.k8s.leader import WriteGate
from access_hygiene.k8s.namespace_sync import namespace_mode
from access_hygiene.k8s.resources import Obj
from access_hygiene.k8s.watch_cache import Change, ClusterState, WatchCache, WatchSpec
from access_hygiene.metrics import AccessMetrics, AccessSnapshot
from access_hygiene.models.findings import Finding
from access_hygiene.render.access import ACCESS_REQUEST_LABEL, EXPIRES_ANNOTATION
from access_hygiene.render.names import object_name
from access_hygiene.settings import OperatorSettings

logger = logging.getLogger(__name__)
Key = tuple[str, ...]  # ("request", namespace, name) or ("eligibility", name)

GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
RBAC_V1 = "rbac.authorization.k8s.io/v1"
ACCESS_WATCHES: tuple[WatchSpec, ...] = (
    WatchSpec(GROUP_VERSION, "AccessEligibility", optional=True),
    WatchSpec(GROUP_VERSION, "AccessRequest", optional=True),
    WatchSpec(GROUP_VERSION, "AccessApproval", optional=True),
    # Only the grant bindings (the label selector keeps this watch small whatever the cluster's size).
    WatchSpec(RBAC_V1, "RoleBinding", label_selector=ACCESS_REQUEST_LABEL),
)
ROLE_KINDS = ("ClusterRole", "Role")
# Read from the main cache before deciding: roles, and Namespaces (no Event is announced into one being deleted).
MAIN_CACHE_KINDS = (*ROLE_KINDS, "Namespace")
LEFTOVER_KINDS = ("Secret", "RoleBinding", "Pod")  # read from the main cache (Secrets when it reads them)
RESYNC_SECONDS = 60.0  # roles and the ceiling are read from the main cache: their changes are seen at this pace
ACCESS_WORKERS = 4
REVOKE_THREADS = 8  # grants starting or expiring together: their POSTs/DELETEs run side by side
# Events are best effort and must not compete with a burst of revocations: a steady trickle.
EVENT_RATE, EVENT_BURST = 20.0, 10


class UrgentWorkQueue:
    """A deduplicating work queue with an urgent lane (expiries, revocations): a key is never worked on twice at
    once, and urgent keys are taken before any other."""

    def __init__(self) -> None:
        self._urgent: asyncio.Queue[Key] = asyncio.Queue()
        self._normal: asyncio.Queue[Key] = asyncio.Queue()
        self._dirty: dict[Key, bool] = {}  # key -> urgent
        self._processing: set[Key] = set()
        self._available = asyncio.Event()

    def add(self, key: Key, *, urgent: bool = False) -> None:
        if key in self._dirty:
            if urgent and not self._dirty[key] and key not in self._processing:
                self._dirty[key] = True
                self._urgent.put_nowait(key)  # the stale normal entry is skipped when taken
                self._available.set()
            return
        self._dirty[key] = urgent
        if key not in self._processing:
            (self._urgent if urgent else self._normal).put_nowait(key)
            self._available.set()

    async def get(self) -> Key:
        while True:
            for lane in (self._urgent, self._normal):
                while not lane.empty():
                    key = lane.get_nowait()
                    if key in self._dirty and key not in self._processing:
                        del self._dirty[key]
                        self._processing.add(key)
                        return key
            self._available.clear()
            await self._available.wait()

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            (self._urgent if self._dirty[key] else self._normal).put_nowait(key)
            self._available.set()

    def __len__(self) -> int:
        return len(self._dirty)


def render_access_event(obj: Mapping[str, Any], event: AccessEvent, now: datetime) -> dict[str, Any]:
    """A Normal or Warning Event on the AccessRequest (`kubectl describe accessrequest` shows it)."""
    metadata = obj.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": object_name(name, f"{now.timestamp():.0f}", event.reason.lower(), max_length=253),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": GROUP_VERSION,
            "kind": "AccessRequest",
            "name": name,
            "namespace": namespace,
            "uid": str(metadata.get("uid") or ""),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def owned_by(binding: Mapping[str, Any], request_uid: str) -> bool:
    """Ours for that request: our managed-by label and a controller ownerReference to the request's uid."""
    metadata = binding.get("metadata") or {}
    if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return False
    return any(
        ref.get("kind") == "AccessRequest" and ref.get("uid") == request_uid and ref.get("controller")
        for ref in metadata.get("ownerReferences") or []
    )


def _same_binding(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    want = desired["metadata"]["annotations"]
    return (
        live.get("roleRef") == desired["roleRef"]
        and live.get("subjects") == desired["subjects"]
        and all(annotations.get(k) == v for k, v in want.items())
    )


def _status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())


class AccessController:
    """Grants and revokes just-in-time access. Roles, the grant ceiling and what a window may have left behind are
    read from the main watch cache (`roles`), which already holds every ClusterRole, Role, RoleBinding and Pod."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        cache: WatchCache,
        roles: ClusterState,
        settings: OperatorSettings,
        metrics: AccessMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.cache = cache
        self.state = cache.state
        self.roles = roles
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.queue = UrgentWorkQueue()
        self.events = EventRecorder(api, rate=EVENT_RATE, burst=EVENT_BURST, clock=clock)
        self.ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=ACCESS_WORKERS, thread_name_prefix="access")
        self._revoker = ThreadPoolExecutor(max_workers=REVOKE_THREADS, thread_name_prefix="access-revoke")
        self._loop = asyncio.get_running_loop()
        self._timers: dict[Key, tuple[datetime, asyncio.TimerHandle]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._timed_inflight = 0  # timed steps (grant at start, revoke at expiry) running now
        self._timed_idle = asyncio.Event()
        self._timed_idle.set()
        self._announced: dict[Key, str] = {}  # request -> last state whose Event was posted by this process
        # request -> the transition whose status write is in flight or failed: (state, its Events). A write can fail
        # after the API server stored it (a timeout, a 5xx after the commit); the retry then sees the new state.
        self._attempted: dict[Key, tuple[str, list[AccessEvent]]] = {}
        self._leftovers: dict[tuple[str, str], list[Finding]] = {}  # request -> its AH-GOV-005 findings
        self._index_lock = threading.Lock()
        self._approvals_index: dict[tuple[str, str], set[str]] = {}  # (namespace, request) -> approval names
        self._bindings_index: dict[tuple[str, str], set[str]] = {}  # (namespace, request) -> grant binding names
        self.on_findings_changed: Any = None  # Callable[[], None]: the reports writer's refresh
        self.gate: WriteGate | None = None  # open on the leader only (docs/ha.md); None: always writes
        metrics.set_source(self.snapshot)
        self.state.set_listener(self._on_changes)  # from the first LIST on: it keeps the indexes

    # Lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.cache.start()
        self.events.start()
        self._tasks.append(asyncio.create_task(self._run(), name="access-grants"))
        for number in range(ACCESS_WORKERS):
            self._tasks.append(asyncio.create_task(self._work(), name=f"access-grants-worker-{number}"))

    async def stop(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.events.stop()
        for pool in (self._executor, self._revoker):  # a call in flight finishes (threads cannot be cancelled)
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.cache.stop)

    async def _run(self) -> None:
        # Decide nothing before every kind is listed, roles included: a request judged against a half-loaded
        # cache would be denied for a role that merely was not listed yet (and Denied is final).
        while not await asyncio.to_thread(self._wait_synced, 30.0):
            logger.warning("Just-in-time access: watch caches not synced after 30s; waiting.")
        self._enqueue_everything(urgent_overdue=True)
        self.ready.set()
        logger.info("Just-in-time access: caches synced; granting and revoking.")
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            self._enqueue_everything(urgent_overdue=True)

    def _wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self.state.wait_synced(timeout):
            return False
        while not all(self.roles.is_synced(kind) for kind in MAIN_CACHE_KINDS):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _enqueue_everything(self, *, urgent_overdue: bool = False) -> None:
        now = self.clock.now()
        overdue = set()
        for binding in self.state.objects("RoleBinding"):
            expires = ((binding.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION, "")
            request = ((binding.get("metadata") or {}).get("labels") or {}).get(ACCESS_REQUEST_LABEL, "")
            key: Key = ("request", _namespace(binding), request)
            if urgent_overdue and revocation_due(str(expires), now) is not None and key not in overdue:
                overdue.add(key)
                self._due(key)  # revoked first, before everything else is looked at
        for request_obj in self.state.objects("AccessRequest"):
            self.queue.add(("request", _namespace(request_obj), _name(request_obj)))
        for eligibility in self.state.objects("AccessEligibility"):
            self.queue.add(("eligibility", _name(eligibility)))

    # Events from the watch ----------------------------------------------------------------------

    def _on_changes(self, changes: list[Change]) -> None:  # reflector threads
        with self._index_lock:
            for change in changes:
                if change.kind in ("AccessApproval", "RoleBinding"):
                    self._index(change)
        self._loop.call_soon_threadsafe(self._arrived, changes)

    def _index(self, change: Change) -> None:
        """Approvals and grant bindings by request, so a decision never scans a namespace of thousands."""
        index = self._approvals_index if change.kind == "AccessApproval" else self._bindings_index
        for obj, present in ((change.old, False), (change.new, True)):
            if obj is None:
                continue
            if change.kind == "AccessApproval":
                request = str((obj.get("spec") or {}).get("request") or "")
            else:
                request = str(((obj.get("metadata") or {}).get("labels") or {}).get(ACCESS_REQUEST_LABEL) or "")
            key = (_namespace(obj), request)
            if present:
                index.setdefault(key, set()).add(_name(obj))
            elif key in index:
                index[key].discard(_name(obj))
                if not index[key]:
                    del index[key]

    def _arrived(self, changes: list[Change]) -> None:
        if not self.ready.is_set():
            return  # the first pass after sync covers everything the cache holds
        for change in changes:
            for key in self._work_for(change):
                self.queue.add(key)

    def _work_for(self, change: Change) -> set[Key]:
        obj = change.new if change.new is not None else change.old
        assert obj is not None
        namespace = _namespace(obj)
        if change.kind == "AccessRequest":
            return {("request", namespace, _name(obj))}
        if change.kind == "AccessApproval":
            names = {str(((o or {}).get("spec") or {}).get("request") or "") for o in (change.old, change.new)}
            return {("request", namespace, name) for name in names if name}
        if change.kind == "RoleBinding":
            request = ((obj.get("metadata") or {}).get("labels") or {}).get(ACCESS_REQUEST_LABEL, "")
            return {("request", namespace, str(request))} if request else set()
        if change.kind == "AccessEligibility":
            name = _name(obj)
            keys: set[Key] = {("eligibility", name)}
            for request_obj in self.state.objects("AccessRequest"):
                if (request_obj.get("spec") or {}).get("eligibility") == name:
                    keys.add(("request", _namespace(request_obj), _name(request_obj)))
            return keys
        return set()

    # Timers -------------------------------------------------------------------------------------

    def _schedule(self, key: Key, wake_at: datetime | None) -> None:
        """One timer per request, at its next time-driven change (start or expiry); urgent when it fires."""
        current = self._timers.get(key)
        if current is not None and current[0] == wake_at:
            return
        if current is not None:
            current[1].cancel()
            del self._timers[key]
        if wake_at is None:
            return
        delay = max(0.0, (wake_at - self.clock.now()).total_seconds())
        self._timers[key] = (wake_at, self._loop.call_later(delay, self._due, key))

    def _due(self, key: Key) -> None:
        """A grant's start or expiry, or an overdue grant found at start: a revocation is done at once, on threads
        of its own (the DELETE only), before the request's queued work writes status and Events."""
        self._timers.pop(key, None)
        self._timed_inflight += 1
        self._timed_idle.clear()
        future = self._loop.run_in_executor(self._revoker, self._act_now, key)
        future.add_done_callback(lambda _: self._timed_done(key))

    def _timed_done(self, key: Key) -> None:
        self._timed_inflight -= 1
        if not self._timed_inflight:
            self._timed_idle.set()
        self.queue.add(key, urgent=True)

    def _act_now(self, key: Key) -> None:
        """The time-critical half of a decision: delete what must go, create the grant that starts now. Status,
        approvals and Events follow in the request's queued work."""
        _, namespace, name = key
        request = self.state.get("AccessRequest", namespace, name)
        if request is None or not self._leading():
            return
        try:
            bindings = self._own_bindings(namespace, name)
            decision = decide_request(
                request,
                self.state.get("AccessEligibility", "", str((request.get("spec") or {}).get("eligibility") or "")),
                self._approvals_of(namespace, name),
                self._role_rules,
                self._limits(),
                self.clock.now(),
            )
            for binding in bindings:
                if _name(binding) != decision.binding_name and owned_by(binding, _uid(request)):
                    self._delete_binding(binding, reason=decision.state, status=decision.status)
            if decision.binding is not None:
                self._ensure_binding(decision, bindings, _uid(request), dict(decision.status))
        except NotLeaderError:
            return  # the next leader revokes it from its cache
        except API_FAILURES as error:
            if is_connection_error(error):  # an outage: logged once for all callers; the queued work retries
                OUTAGE.failed(error)
                return
            detail = api_error_message(error) if isinstance(error, kubernetes.client.ApiException) else error
            logger.warning(f"Access {namespace}/{name}: the timed step failed ({detail}); retrying.")
        except Exception:  # the queued work right after retries it, with status and the error handling
            logger.exception(f"Access {namespace}/{name}: the timed step failed; retrying.")

    # Work ---------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            await self._timed_idle.wait()  # status writes wait while grants start or expire: they go first
            try:
                await self._handle(key)
            finally:
                self.queue.done(key)

    def _leading(self) -> bool:
        return self.gate is None or self.gate.is_open()

    def started_leading(self) -> None:
        """Thread-safe: a standby's cache is warm; on takeover every request is looked at once, overdue grants
        first (their timers fired on the standby without writing)."""
        if self.ready.is_set():
            self._loop.call_soon_threadsafe(lambda: self._enqueue_everything(urgent_overdue=True))

    async def _handle(self, key: Key) -> None:
        if not self._leading():
            return  # a standby decides nothing: the takeover enqueues everything
        try:
            if key[0] == "eligibility":
                await self._loop.run_in_executor(self._executor, self._sync_eligibility, key[1])
                return
            _, namespace, name = key
            wake_at = await self._loop.run_in_executor(self._executor, self._sync_request, namespace, name)
            self._schedule(key, wake_at)
            OUTAGE.succeeded()
        except NotLeaderError as error:  # the fence passed mid-work: the next leader redoes it from its cache
            logger.info(f"Access {'/'.join(key[1:])} stopped: {error}")
        except API_FAILURES as error:
            if is_connection_error(error):
                OUTAGE.failed(error)
            if is_transient(error):
                self._loop.call_later(0.5, lambda: self.queue.add(key, urgent=True))  # a revocation must not wait
            else:
                detail = api_error_message(error) if isinstance(error, kubernetes.client.ApiException) else error
                logger.error(f"Access {'/'.join(key[1:])} failed: {detail}")
        except Exception:
            logger.exception(f"Access {'/'.join(key[1:])} failed; retrying at the next resync.")

    def _role_rules(self, kind: str, name: str, namespace: str) -> list[dict[str, Any]] | None:
        role = self.roles.get(kind, namespace if kind == "Role" else "", name)
        return None if role is None else list(role.get("rules") or [])

    def _limits(self) -> GrantLimits:
        ceiling = self.roles.get("ClusterRole", "", self.settings.grant_ceiling_cluster_role) or {}
        return GrantLimits(
            ceiling_rules=list(ceiling.get("rules") or []),
            allowed_sensitive=frozenset(self.settings.allowed_sensitive_capabilities),
        )

    def _sync_eligibility(self, name: str) -> None:
        eligibility = self.state.get("AccessEligibility", "", name)
        if eligibility is None:
            return
        status = eligibility_status(eligibility, self._role_rules, self._limits(), self.clock.now())
        if _status_changed(eligibility.get("status"), status):
            resources.patch_merge(self.api, GROUP_VERSION, "AccessEligibility", name, {"status": status}, "", "status")

    def _indexed(self, kind: str, index: dict[tuple[str, str], set[str]], namespace: str, name: str) -> list[Obj]:
        with self._index_lock:
            names = sorted(index.get((namespace, name), ()))
        found = [self.state.get(kind, namespace, item) for item in names]
        return [obj for obj in found if obj is not None]

    def _approvals_of(self, namespace: str, name: str) -> list[Obj]:
        approvals = self._indexed("AccessApproval", self._approvals_index, namespace, name)
        return [a for a in approvals if (a.get("spec") or {}).get("request") == name]

    def _own_bindings(self, namespace: str, request_name: str) -> list[Obj]:
        bindings = self._indexed("RoleBinding", self._bindings_index, namespace, request_name)
        return [b for b in bindings if ((b.get("metadata") or {}).get("labels") or {}).get(ACCESS_REQUEST_LABEL)
                == request_name]  # fmt: skip

    def _sync_request(self, namespace: str, name: str) -> datetime | None:
        """Decide one request and make it so: revocations first (the DELETE), then the grant, then status, approval
        statuses and Events. Returns when to look again."""
        request = self.state.get("AccessRequest", namespace, name)
        bindings = self._own_bindings(namespace, name)
        if request is None:  # deleted: its bindings go now (garbage collection would take its time)
            for binding in bindings:
                self._delete_binding(binding, reason="request deleted")
            self._announced.pop((namespace, name), None)
            self._attempted.pop((namespace, name), None)
            if self._leftovers.pop((namespace, name), None) is not None and self.on_findings_changed is not None:
                self.on_findings_changed()
            return None
        spec = request.get("spec") or {}
        eligibility = self.state.get("AccessEligibility", "", str(spec.get("eligibility") or ""))
        approvals = self._approvals_of(namespace, name)
        now = self.clock.now()
        decision = decide_request(request, eligibility, approvals, self._role_rules, self._limits(), now)
        request_uid = _uid(request)
        for binding in bindings:
            if _name(binding) == decision.binding_name:
                continue
            if owned_by(binding, request_uid):
                self._delete_binding(binding, reason=decision.state, status=decision.status)
            else:
                logger.warning(
                    f"RoleBinding {namespace}/{_name(binding)} carries the access-request label of {name} but is not "
                    "owned by it; left alone."
                )
        self._announce_stored_transition(request, now)
        status = dict(decision.status)
        if decision.binding is not None:
            status = self._ensure_binding(decision, bindings, request_uid, status)
        if decision.state in ("Expired", "Revoked"):
            status = self._leftovers_of(request, status, now)
        key = (namespace, name)
        if decision.state != (request.get("status") or {}).get("state") and self._announced.get(key) != decision.state:
            self._attempted[key] = (decision.state, decision.events)
        if _status_changed(request.get("status"), status):
            resources.patch_merge(
                self.api, GROUP_VERSION, "AccessRequest", name, {"status": status}, namespace, "status"
            )
        self._record_transition(request, decision, now)
        self._write_approval_statuses(namespace, approvals, decision, now)
        return decision.wake_at

    def _leftovers_of(self, request: dict[str, Any], status: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The ended window's leftovers (AH-GOV-005) into status (the grant's record), findings, and a Warning
        Event for new ones; in enforce mode, the recorded ones admission attributes to the requester removed."""
        namespace, name = _namespace(request), _name(request)
        kind, _, role_name = str(status.get("role") or "").partition("/")
        rules = self._role_rules(kind, role_name, namespace) or []
        kinds = creatable_kinds(rules)  # a read-only role leaves nothing: no namespace scan at all
        objects = [obj for k in LEFTOVER_KINDS if k in kinds for obj in self.roles.in_namespace(k, namespace)]
        ended = {**request, "status": status}
        found = find_leftovers(ended, rules, objects)
        removed = [item for item in recorded_leftovers(request) if item.removed_at]
        removed_now = []
        if self._enforcing(namespace):
            # Only what the stored record lists (request as the API server holds it): a leftover is recorded by
            # one pass and removed by the next, never deleted without its record.
            for item in removable_leftovers(request, lambda k, n: self.roles.get(k, namespace, n)):
                if self._remove_leftover(request, item):
                    removed_now.append(replace(item, removed_at=format_time(now)))
        removed += removed_now
        gone = {item.uid for item in removed}
        listed = sorted([*removed, *(item for item in found if not item.uid or item.uid not in gone)],
                        key=lambda item: (item.created_at, item.kind, item.name))  # fmt: skip
        findings = leftover_findings(ended, listed)
        if self._leftovers.get((namespace, name), []) != findings:
            if findings:
                self._leftovers[(namespace, name)] = findings
            else:
                self._leftovers.pop((namespace, name), None)
            if self.on_findings_changed is not None:
                self.on_findings_changed()
        if not listed and not status.get("leftovers"):
            return status
        recorded = {(item.get("kind"), item.get("name")) for item in status.get("leftovers") or []}
        new = [f for f, item in zip(findings, listed, strict=True)
               if (item.kind, item.name) not in recorded and not item.removed_at]  # fmt: skip
        if self.settings.warning_events:
            if new:
                message = f"{LEFTOVER_RULE_ID}: " + "; ".join(f.message for f in new[:3])
                self._post_event(request, AccessEvent("Warning", "AccessLeftover", message), now)
            if removed_now:
                what = ", ".join(f"{item.kind} {item.name} (uid {item.uid}, created by {item.created_by})"
                                 for item in removed_now)  # fmt: skip
                message = f"{LEFTOVER_RULE_ID}: removed what the grant left behind (enforce mode): {what}"
                self._post_event(request, AccessEvent("Normal", "AccessLeftoverRemoved", message), now)
        return {**status, "leftovers": [item.as_status() for item in listed[:MAX_LEFTOVERS]]}

    def _enforcing(self, namespace: str) -> bool:
        home = self.roles.get("Namespace", "", namespace)
        return (namespace_mode(home, self.settings) if home is not None else self.settings.mode) == "enforce"

    def _remove_leftover(self, request: Mapping[str, Any], item: Leftover) -> bool:
        """Delete one recorded leftover, only the recorded incarnation (uid precondition). False when it is gone
        already, was replaced (409) or the operator may not delete it (403: said in the log)."""
        api_version = "v1" if item.kind == "Secret" else RBAC_V1
        try:
            deleted = resources.delete(self.api, api_version, item.kind, item.name, item.namespace, uid=item.uid)
        except kubernetes.client.ApiException as error:
            if error.status not in (403, 409):
                raise
            logger.warning(
                f"{item.kind} {item.namespace}/{item.name}, left by AccessRequest {_name(request)}, not removed: "
                f"{api_error_message(error)}"
            )
            return False
        if deleted:
            logger.info(
                f"{item.kind} {item.namespace}/{item.name} (uid {item.uid}, created by {item.created_by} during "
                f"AccessRequest {_name(request)}) removed (enforce mode)."
            )
        return deleted

    def findings(self) -> list[Finding]:
        """Every AH-GOV-005 finding now (the reports add them to the audit's)."""
        return [finding for group in list(self._leftovers.values()) for finding in group]

    def _delete_binding(
        self, binding: Mapping[str, Any], *, reason: str, status: Mapping[str, Any] | None = None
    ) -> None:
        namespace, name = _namespace(binding), _name(binding)
        deleted = resources.delete(self.api, RBAC_V1, "RoleBinding", name, namespace, uid=_uid(binding))
        if not deleted:
            return
        now = self.clock.now()
        # Lag from the moment it should have gone: the expiry, or the revocation decision (endedAt).
        due = str((status or {}).get("endedAt") or "")
        expires = ((binding.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION, "")
        lag = revocation_due(due or str(expires), now)
        if lag is not None:
            self.metrics.observe_revocation(lag.total_seconds())
        seconds = f" ({lag.total_seconds():.3f} s after it was due)" if lag is not None else ""
        logger.info(f"RoleBinding {namespace}/{name} deleted: {reason}{seconds}.")

    def _ensure_binding(
        self,
        decision: RequestDecision,
        bindings: list[dict[str, Any]],
        request_uid: str,
        status: dict[str, Any],
    ) -> dict[str, Any]:
        desired = decision.binding
        assert desired is not None
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        live = next((b for b in bindings if _name(b) == name), None)
        if live is not None and owned_by(live, request_uid):
            if not _same_binding(live, desired):
                if live.get("roleRef") != desired["roleRef"]:  # roleRef is immutable: replace
                    resources.delete(self.api, RBAC_V1, "RoleBinding", name, namespace, uid=_uid(live))
                    self._create_binding(desired)
                else:
                    resources.apply(self.api, desired)
            return status
        if live is None:
            if decision.wake_at is not None and self.clock.now() >= decision.wake_at:
                return status  # decided just before the expiry, now past it: never create it late
            try:
                self._create_binding(desired)
                return status
            except kubernetes.client.ApiException as error:
                if error.status != 409:
                    raise
            # Taken: by our own fast path a moment ago (the watch has not delivered it yet), or by someone else.
            existing = resources.get(self.api, RBAC_V1, "RoleBinding", name, namespace)
            if existing is not None and owned_by(existing, request_uid):
                return status
        # A RoleBinding of that name exists and is not ours: never adopt it, say so.
        message = f"RoleBinding {namespace}/{name} exists and is not owned by this request; nothing was granted"
        conditions = [
            {**c, "status": "False", "reason": "BindingConflict", "message": message}
            if c.get("type") == "Active"
            else c
            for c in status.get("conditions") or []
        ]
        return {**status, "bindings": [], "conditions": conditions}

    def _create_binding(self, desired: Mapping[str, Any]) -> None:
        path = resources.resource_type(RBAC_V1, "RoleBinding").path(desired["metadata"]["namespace"])
        resources.request(self.api, "POST", path, query={"fieldManager": FIELD_MANAGER}, body=dict(desired))
        logger.info(
            f"RoleBinding {desired['metadata']['namespace']}/{desired['metadata']['name']} created "
            f"(until {desired['metadata']['annotations'][EXPIRES_ANNOTATION]})."
        )

    def _record_transition(self, request: Mapping[str, Any], decision: RequestDecision, now: datetime) -> None:
        """After the status write: the transition's Events, once."""
        key = (_namespace(request), _name(request))
        self._attempted.pop(key, None)
        previous_state = (request.get("status") or {}).get("state")
        # One Event per transition: not again for one this process announced whose status the watch has not
        # delivered yet (the next decision still sees the old state).
        if decision.state == previous_state or self._announced.get(key) == decision.state:
            return
        self._announce(request, decision.state, decision.events, now)

    def _announce_stored_transition(self, request: Mapping[str, Any], now: datetime) -> None:
        """A transition whose status write raised although the API server had stored it: this decision sees the new
        state as the previous one and announces nothing, so the attempt's Events are announced here, once."""
        key = (_namespace(request), _name(request))
        attempted = self._attempted.pop(key, None)
        if attempted is None:
            return
        state, events = attempted
        if (request.get("status") or {}).get("state") == state and self._announced.get(key) != state:
            self._announce(request, state, events, now)

    def _announce(self, request: Mapping[str, Any], state: str, events: list[AccessEvent], now: datetime) -> None:
        self._announced[(_namespace(request), _name(request))] = state
        self.metrics.count_transition(state)
        for event in events:
            self._post_event(request, event, now)

    def _post_event(self, request: Mapping[str, Any], event: AccessEvent, now: datetime) -> None:
        """Queue an Event on the request, unless the request or its namespace is being deleted: the API server
        refuses new content in a terminating namespace (403), and after a namespace of 1,000 requests is deleted
        their Events (each refused, each spending the recorder's rate) would delay or push out everyone else's."""
        if not self.settings.warning_events or self._being_deleted(request):
            return
        self.events.announce(render_access_event(request, event, now))

    def _being_deleted(self, request: Mapping[str, Any]) -> bool:
        if (request.get("metadata") or {}).get("deletionTimestamp"):
            return True
        home = self.roles.get("Namespace", "", _namespace(request)) or {}
        return bool((home.get("metadata") or {}).get("deletionTimestamp")) or (
            (home.get("status") or {}).get("phase") == "Terminating"
        )

    def _write_approval_statuses(
        self, namespace: str, approvals: list[dict[str, Any]], decision: RequestDecision, now: datetime
    ) -> None:
        by_name = {_name(a): a for a in approvals}
        for verdict in decision.approvals:
            approval = by_name.get(verdict.name)
            if approval is None:
                continue
            generation = int((approval.get("metadata") or {}).get("generation") or 0)
            old: Mapping[str, Any] = next(
                (c for c in (approval.get("status") or {}).get("conditions") or [] if c.get("type") == "Counted"), {}
            )
            flag = "True" if verdict.counted else "False"
            if (old.get("status"), old.get("reason"), old.get("message")) == (flag, verdict.reason, verdict.message):
                continue
            condition = {
                "type": "Counted",
                "status": flag,
                "reason": verdict.reason,
                "message": verdict.message,
                "observedGeneration": generation,
                "lastTransitionTime": format_time(now),
            }
            status = {"observedGeneration": generation, "conditions": [condition]}
            resources.patch_merge(
                self.api, GROUP_VERSION, "AccessApproval", verdict.name, {"status": status}, namespace, "status"
            )

    # Metrics ------------------------------------------------------------------------------------

    def snapshot(self) -> AccessSnapshot:
        """Read at scrape time: grants present (by role), requests by state, grants past their expiry."""
        now = self.clock.now()
        active: Counter[str] = Counter()
        overdue, oldest = 0, 0.0
        for binding in self.state.objects("RoleBinding"):
            metadata = binding.get("metadata") or {}
            if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
                continue
            role = binding.get("roleRef") or {}
            active[f"{role.get('kind')}/{role.get('name')}"] += 1
            late = revocation_due(str((metadata.get("annotations") or {}).get(EXPIRES_ANNOTATION, "")), now)
            if late is not None:
                overdue += 1
                oldest = max(oldest, late.total_seconds())
        states = Counter(
            str((r.get("status") or {}).get("state") or "Pending") for r in self.state.objects("AccessRequest")
        )
        return AccessSnapshot(
            active_by_role=dict(active), requests_by_state=dict(states), overdue=overdue, oldest_overdue_seconds=oldest
        )
