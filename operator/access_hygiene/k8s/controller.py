"""The event-driven core: watch events -> incremental audit -> metrics, Events, and reconcile work.

Flow: reflector threads put changes into the ClusterState, which hands them here. A coordinator
coalesces a burst (debounce), updates the dependency index, re-audits only the affected scopes,
publishes the result (metrics, Warning Events) and queues work: the affected namespaces' hygiene
and the affected AccessPolicies. Workers run that work from the cache (no LISTs) with a bounded
number of threads; one key is never worked on twice at once. Safety nets (drift re-check, full
relist) run on long timers; exemption expiries are scheduled exactly.
"""

import asyncio
import contextlib
import gc
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes

from access_hygiene import API_GROUP
from access_hygiene.clock import SYSTEM_CLOCK, Clock
from access_hygiene.engine.audit.incremental import ALL, CLUSTER, AuditTotals, IncrementalAudit, scoped_snapshot
from access_hygiene.engine.ground.exemptions import EXEMPT_ANNOTATION
from access_hygiene.engine.ground.namespace_classes import namespace_classes
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, labels_of, name_of, namespace_of
from access_hygiene.engine.planning.policy_status import refusal_news, status_changed
from access_hygiene.k8s import resources
from access_hygiene.k8s.admission import (
    OWNER_KINDS,
    AdmissionWriter,
    apply_access_admission,
    delete_admission,
    desired_admission,
    own_username,
    owner_of,
    parameters_of,
)
from access_hygiene.k8s.discovery import ServedResourcesCache
from access_hygiene.k8s.echo_windows import EchoWindows
from access_hygiene.k8s.errors import (
    API_FAILURES,
    OUTAGE,
    RETRY_REASONS,
    NotLeaderError,
    api_error_message,
    is_connection_error,
    is_transient,
    retry_delay,
    retry_reason,
)
from access_hygiene.k8s.events import EventRecorder, render_policy_event
from access_hygiene.k8s.leader import WriteGate
from access_hygiene.k8s.memory import release_free_memory
from access_hygiene.k8s.namespace_sync import sync_namespace
from access_hygiene.k8s.policy_sync import prune_policy_objects, sync_policy
from access_hygiene.k8s.reports import ReportCrdWatch, ReportWriter
from access_hygiene.k8s.snapshot_loader import OPTIONAL_KINDS, SNAPSHOT_KINDS
from access_hygiene.k8s.watch_cache import Change, WatchCache, WatchSpec
from access_hygiene.metrics import Metrics, ScanResult
from access_hygiene.models.findings import Finding
from access_hygiene.render.admission import OwnerRef
from access_hygiene.settings import OperatorSettings

logger = logging.getLogger(__name__)

# Every kind the rules read (the same list the CLI's live scan loads), plus the API server's endpoints.
WATCHED_KINDS: tuple[WatchSpec, ...] = (
    *(WatchSpec(api_version, kind, optional=kind in OPTIONAL_KINDS) for api_version, kind in SNAPSHOT_KINDS),
    WatchSpec("discovery.k8s.io/v1", "EndpointSlice", label_selector="kubernetes.io/service-name=kubernetes"),
)
SECRETS = WatchSpec("v1", "Secret", metadata_only=True)
POLICY_KINDS = frozenset({"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"})
MANAGED_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy")
# What kopf and earlier versions of this operator left on Namespaces; removed once at start.
LEGACY_FINALIZER = f"{API_GROUP}/cleanup"
# What keeps a deleted AccessPolicy until its cluster-scoped objects (no owner GC) are removed. The name kopf
# used when it held it, so policies created by earlier versions keep theirs.
POLICY_FINALIZER = f"{API_GROUP}/cleanup"
ADMISSION_OFF = ("admission-off",)  # work: remove admission objects an earlier configuration installed
ACCESS_ADMISSION = ("access-admission",)  # work: the just-in-time access policies, always on
LEGACY_ANNOTATIONS = (f"{API_GROUP}/last-handled-configuration",)
WorkKey = tuple[str, ...]
T = TypeVar("T")
HEARTBEAT_SECONDS = 60.0
REPORTS_SECONDS = 2.0
# Report writes per step: between steps, fresh events go first (the coordinator runs before the next step).
REPORT_WRITES_PER_STEP = 25
# How long a re-audit waits for the direct work of the same batch (a policy's own reconcile) to finish first.
DIRECT_WORK_FIRST_SECONDS = 1.0
ADMISSION_RETRY_SECONDS = 5.0
# Fresh events first: a change in a scope our own workers wrote to within this window is taken for the echo of
# those writes. Echo scopes are re-audited ECHO_SCOPES_PER_STEP at a time, and a step ends early when changes arrive,
# so an event from elsewhere waits for one step, not for the whole backlog of echoes (thousands of scopes for a
# minute after a start at scale). A user's change in such a scope is still audited, one step later at most.
ECHO_WINDOW_SECONDS = 3.0
ECHO_SCOPES_PER_STEP = 32
OWNER_KIND_NAMES = frozenset(kind for _, kind in OWNER_KINDS)
# The cyclic collector's thresholds. Python's default (a collection every 700 net allocations) ran one every few
# milliseconds of a re-audit, which allocates findings by the thousand, and a full pass every few re-audits: 30 % of
# the re-audit time at 43,000 findings, full passes of 0.2-0.3 s (in-process, 60 re-audits on the realistic
# population: 18.7 s -> 12.7 s). The operator's objects are freed by reference counting; cycles are rare.
GC_THRESHOLDS = (50_000, 20, 100)
# Free memory goes back to the OS when the work queue drains after re-audits, at most this often (k8s/memory.py).
RELEASE_MEMORY_SECONDS = 30.0


def watched_kinds(settings: OperatorSettings) -> tuple[WatchSpec, ...]:
    return (*WATCHED_KINDS, SECRETS) if settings.read_secret_metadata else WATCHED_KINDS


class WorkQueue:
    """Deduplicating queue: a key queued while it is being worked on runs once more afterwards. Urgent keys (what a
    user just changed) are taken before the rest (the start-up backlog, the echoes of our own writes)."""

    def __init__(self) -> None:
        self._urgent: deque[Hashable] = deque()
        self._normal: deque[Hashable] = deque()
        self._available = asyncio.Event()
        self._dirty: set[Hashable] = set()  # queued (to run again after done(), when being worked on)
        self._hurry: set[Hashable] = set()  # the dirty keys wanted urgently
        self._processing: set[Hashable] = set()
        self._settled = asyncio.Event()  # set whenever a key is done

    def add(self, key: Hashable, urgent: bool = False) -> None:
        if key in self._dirty:
            if urgent and key not in self._hurry:
                self._hurry.add(key)
                if key not in self._processing:  # promoted: its entry in the backlog goes stale
                    self._put(self._urgent, key)
            return
        self._dirty.add(key)
        if urgent:
            self._hurry.add(key)
        if key not in self._processing:
            self._put(self._urgent if urgent else self._normal, key)

    def _put(self, entries: deque[Hashable], key: Hashable) -> None:
        entries.append(key)
        self._available.set()

    def add_after(self, key: Hashable, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    async def get(self) -> Hashable:
        while True:
            for entries in (self._urgent, self._normal):
                while entries:
                    key = entries.popleft()
                    # An entry is stale when its key was taken through another entry (promoted) and not queued
                    # again since, or is being worked on (done() queues it again).
                    if key in self._dirty and key not in self._processing:
                        self._dirty.discard(key)
                        self._hurry.discard(key)
                        self._processing.add(key)
                        return key
            self._available.clear()
            await self._available.wait()

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        self._settled.set()
        if key in self._dirty:
            self._put(self._urgent if key in self._hurry else self._normal, key)

    def empty(self) -> bool:
        """Nothing can be taken now (keys being worked on and queued again run after done())."""
        return not any(k in self._dirty and k not in self._processing for k in (*self._urgent, *self._normal))

    async def wait_settled(self, keys: Iterable[Hashable]) -> None:
        """Wait until none of the keys is queued or being worked on."""
        pending = set(keys)
        while pending & (self._dirty | self._processing):
            self._settled.clear()
            await self._settled.wait()

    def __len__(self) -> int:
        return len(self._dirty)


async def wake_or_timeout(wake: asyncio.Event, seconds: float) -> None:
    """Wait until `wake` is set or `seconds` have passed. Not asyncio.wait_for: on Python 3.11, a task
    cancelled in the same loop turn as the event is set gets the wait's result instead of CancelledError (the
    wait is done, so wait_for hands it back and drops the cancellation: python/cpython#86296). The coordinator's
    loop then waits again, up to the drift interval, and stop() waits on it: SIGTERM during a burst of events hung
    `access-hygiene run` until it was killed (tests/cluster/test_clean_stop.py)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await wake.wait()


class Controller:
    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        cache: WatchCache,
        settings: OperatorSettings,
        metrics: Metrics,
        clock: Clock = SYSTEM_CLOCK,
        gate: WriteGate | None = None,
    ):
        self.api = api
        self.clock = clock
        # Only the leader writes (k8s/leader.py); without election the gate is always open.
        self.gate = gate if gate is not None else WriteGate(clock, elected=False)
        self.cache = cache
        self.state = cache.state
        self.settings = settings
        self.metrics = metrics
        self.audit = IncrementalAudit()
        self.events = EventRecorder(api, clock=clock, may_post=self.gate.is_open)
        self.discovery = ServedResourcesCache()
        self.reports = ReportWriter(settings.report_max_results) if settings.write_reports else None
        self._reports_due = asyncio.Event()
        # Reports are read and written only while their CRDs are served (watched: no LIST of an absent kind).
        self.report_crds = ReportCrdWatch(cache.api, self._report_crds_changed) if self.reports is not None else None
        if self.reports is not None:
            self.reports.available = False
        self._coordinator_idle = asyncio.Event()  # set while the coordinator waits for events
        self._reports_announced = False
        self._published_findings: list[Finding] = []
        self._totals: AuditTotals | None = None
        self.queue = WorkQueue()
        self.ready = asyncio.Event()
        # The dependency index is read by worker threads (their sub-snapshots) while the coordinator updates it;
        # a re-audit holds the audit lock for its whole run, the index lock only while it reads the index.
        # Workers read a scope's findings without a lock: a re-audit replaces each scope's result whole.
        self._index_lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._changes: list[Change] = []
        # The work of policies a user changed, queued on arrival since the coordinator last looked: the re-audit waits
        # for it (bounded). Not the work our own writes' echoes ask for: a fresh event's finding would wait for it.
        self._direct: set[WorkKey] = set()
        self._echo_windows = EchoWindows(ECHO_WINDOW_SECONDS)  # the scopes our workers just wrote to
        self._echo_backlog: dict[str, None] = {}  # echo scopes not re-audited yet, oldest first
        self._changes_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Threads of our own, not the loop's default executor (min(32, cores + 4): 6 threads on 2 cores, shared
        # with every other asyncio.to_thread): the workers get as many threads as there are workers, and an
        # event's re-audit never queues behind the start-up backlog's API writes.
        self._work_threads = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="access-hygiene-work")
        self._audit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-hygiene-audit")
        self._tasks: list[asyncio.Task[None]] = []
        self._published_at = time.monotonic()
        self._reaudits = 0  # re-audits run; memory is released when the queue drains after some
        self._released = (0, time.monotonic())  # (re-audits, when) at the last release
        self._refusals: dict[WorkKey, tuple[Any, ...]] = {}  # policy -> (reason, message, generation) announced
        # Admission (when on): its parameters follow the watch-fed state; only changed objects are written.
        self.admission = AdmissionWriter() if settings.admission_enabled else None
        self._admission_identity: tuple[OwnerRef | None, str] | None = None  # (owner ClusterRole, user name)
        self._admission_due = settings.admission_enabled
        self._admission_keys: frozenset[str] = frozenset()  # the owner-exemption keys last written
        self._admission_inflight: asyncio.Future[float] | None = None
        self._gc_thresholds: tuple[int, int, int] = gc.get_threshold()
        # Findings produced outside the audit (just-in-time access leftovers, AH-GOV-005), added to the reports.
        self.extra_findings: Callable[[], list[Finding]] | None = None

    # Lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        for reason in RETRY_REASONS:  # every reason present from the start, at 0
            self.metrics.count_api_retry(reason, 0)
        OUTAGE.reset()  # a run starts knowing of no outage (an earlier in-process run may have stopped in one)
        OUTAGE.set_listener(self.metrics.count_api_retry)
        self._gc_thresholds = gc.get_threshold()  # put back at stop(): the process may go on (in-process tests)
        gc.set_threshold(*GC_THRESHOLDS)
        self.state.set_listener(self._on_changes)
        self.cache.start()
        if self.settings.warning_events:
            self.events.start()
        self._tasks.append(asyncio.create_task(self._coordinate(), name="access-hygiene-coordinator"))
        if self.reports is not None and self.report_crds is not None:
            self.report_crds.start()
            self._tasks.append(asyncio.create_task(self._write_reports(), name="access-hygiene-reports"))
        for number in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"access-hygiene-worker-{number}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._admission_inflight is not None:
            with contextlib.suppress(Exception):
                await self._admission_inflight
        self.events.stop()
        for threads in (self._work_threads, self._audit_thread):
            threads.shutdown(wait=False, cancel_futures=True)  # (a call in flight ends by its own timeout)
        await asyncio.to_thread(self._stop_watches)
        gc.set_threshold(*self._gc_thresholds)

    async def _in_audit_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(self._audit_thread, function, *args)

    def _stop_watches(self) -> None:
        """Stop every watch (joining their threads blocks: call from a thread), then close their connections."""
        if self.report_crds is not None:
            self.report_crds.stop()
        self.cache.stop()
        self.cache.api.close()

    # Leadership (event loop) ------------------------------------------------------------------------

    def started_leading(self) -> None:
        """Take over from a full cache: the state stayed warm on the standby, so plan everything once
        (level-triggered), write the reports and admission objects from scratch, export the findings."""
        if self.reports is not None:
            self.reports = ReportWriter(self.settings.report_max_results)  # what it wrote as leader before may be gone
        if self.admission is not None:
            self.admission = AdmissionWriter()
            self._admission_identity = None
            self._admission_due = True
        self.metrics.set_leading(True)
        if self.ready.is_set():
            self._enqueue_takeover()
            self._reports_due.set()
            self._wake.set()

    def stopped_leading(self) -> None:
        self.metrics.set_leading(False)

    def _on_changes(self, changes: list[Change]) -> None:  # reflector threads
        with self._changes_lock:
            self._changes.extend(changes)
        self._loop.call_soon_threadsafe(self._arrived, changes)

    def _arrived(self, changes: list[Change]) -> None:
        """A change's direct work (its policy's reconcile) is queued as it arrives, not when the coordinator gets
        to it (it may be in the middle of a re-audit). Before start-up is done, the queueing of everything that
        ends it covers what arrived (the cache already holds it)."""
        if self.ready.is_set():
            for change in changes:
                keys = self._work_for(change)
                # A policy whose spec a user changed goes ahead of the start-up backlog and of the echoes of our
                # own writes (thousands of keys for a minute after a start at scale).
                urgent = change.kind == "AccessPolicy"
                if urgent:
                    self._direct |= keys
                for key in sorted(keys):
                    self.queue.add(key, urgent=urgent)
        self._wake.set()

    def _drain(self) -> list[Change]:
        with self._changes_lock:
            changes, self._changes = self._changes, []
        return changes

    # Coordinator --------------------------------------------------------------------------------

    async def _coordinate(self) -> None:
        while not await asyncio.to_thread(self.state.wait_synced, 30.0):
            missing = [s.kind for s in self.state.specs if not self.state.is_synced(s.kind)]
            logger.warning(f"Watch cache not synced yet after 30s; waiting for: {', '.join(missing)}.")
        await self._in_audit_thread(self._initial_audit)
        self._enqueue_takeover()  # covers the direct work of what arrived so far: no await until ready is set
        self.ready.set()
        logger.info("Watch cache synced and cluster audited; reacting to events.")
        if self.admission is not None:  # at once, not at the first event: the floor may have moved while down
            await self._admission_step()
        drift_at = time.monotonic() + self.settings.drift_interval_seconds
        resync_at = time.monotonic() + self.settings.resync_interval_seconds
        while True:
            heartbeat_at = self._published_at + HEARTBEAT_SECONDS
            timeout = min(drift_at, resync_at, heartbeat_at, self._expiry_deadline()) - time.monotonic()
            self._coordinator_idle.set()
            await wake_or_timeout(self._wake, timeout)
            self._coordinator_idle.clear()
            self._wake.clear()
            if self.settings.event_debounce_seconds:
                await asyncio.sleep(self.settings.event_debounce_seconds)  # coalesce the rest of a burst
            now = time.monotonic()
            if now >= drift_at:
                self._enqueue_everything()
                drift_at = now + self.settings.drift_interval_seconds
            if now >= resync_at:
                self.cache.relist()
                resync_at = now + self.settings.resync_interval_seconds
            await self._process(self._drain())
            await self._release_memory()
            if time.monotonic() >= self._published_at + HEARTBEAT_SECONDS and not OUTAGE.in_outage:
                # Idle but watching: the result is still current, so say so (the "scan stalled" alert reads it).
                await self._in_audit_thread(self._publish, 0.0, False)

    def _expiry_deadline(self) -> float:
        with self._audit_lock:
            upcoming = self.audit.next_expiry()
        if upcoming is None:
            return float("inf")
        seconds = (upcoming[0] - self.clock.now()).total_seconds()
        return time.monotonic() + max(0.0, seconds) + 0.05

    def _initial_audit(self) -> None:
        started = time.monotonic()
        changes = self._drain()
        with self._audit_lock, self._index_lock:
            for change in changes:
                self.audit.observe(change.kind, change.old, change.new)
            self.audit.full(self.state, self.settings.audit_context(now=self.clock.now()), self.state.snapshot())
            findings = self.audit.totals().findings
        self.events.seed(findings, self._uid_of)
        self._publish(time.monotonic() - started)
        # What start-up loaded (the cluster's objects, the first result) lives long: keep it out of the cyclic
        # collector's full passes, which would otherwise walk all of it and stall an event's re-audit.
        gc.freeze()
        release_free_memory()  # the LIST pages and the first audit's intermediates

    async def _release_memory(self) -> None:
        """After a burst of re-audits (the start-up writes' echoes), once the work queue has drained: what the burst
        freed goes back to the OS, at most every RELEASE_MEMORY_SECONDS."""
        reaudits, released_at = self._released
        if self._reaudits == reaudits or len(self.queue) or time.monotonic() < released_at + RELEASE_MEMORY_SECONDS:
            return
        self._released = (self._reaudits, time.monotonic())
        await asyncio.to_thread(release_free_memory)

    async def _process(self, changes: list[Change]) -> None:
        fresh: set[str] = set()
        echo: set[str] = set()
        now = time.monotonic()
        with self._index_lock:
            for change in changes:
                scopes = self.audit.observe(change.kind, change.old, change.new)
                (echo if self._echo_windows.is_echo(_home_of(change), now) else fresh).update(scopes)
        # Direct work (a policy changed; queued on arrival) goes first: the re-audit waits for it (bounded), and the
        # policy's status is refreshed once the audit is done.
        direct, self._direct = sorted(self._direct), set()
        upcoming = self.audit.next_expiry()
        expired = upcoming is not None and upcoming[0] <= self.clock.now()
        if upcoming is not None and expired:
            fresh |= upcoming[1]
        admission_due = self.admission is not None and (
            self._admission_due or expired or self._admission_relevant(changes)
        )
        if fresh:
            await self._audit_and_queue(fresh, direct)
            direct = []
        for scope in sorted(echo - fresh):
            self._echo_backlog.setdefault(scope, None)
        for scope in fresh:
            self._echo_backlog.pop(scope, None)  # (just audited)
        while self._echo_backlog:
            step = list(itertools.islice(self._echo_backlog, ECHO_SCOPES_PER_STEP))
            for scope in step:
                del self._echo_backlog[scope]
            await self._audit_and_queue(set(step), direct)
            direct = []
            if self._echo_backlog and self._arrivals_waiting():
                self._wake.set()  # the coordinator comes back for the rest after what arrived
                break
        if admission_due and self._echo_backlog:
            self._admission_due = True  # after the rest: the floor reads the expiries the re-audits find passed
        elif admission_due:  # after the re-audit: the floor reads the exemption expiries it found passed
            await self._admission_step()

    def _arrivals_waiting(self) -> bool:
        with self._changes_lock:
            return bool(self._changes)

    def _mark_echo_window(self, key: WorkKey) -> None:
        """The scopes a work key writes to: their changes for the next ECHO_WINDOW_SECONDS are taken for echoes."""
        if key[0] in ("namespace", "legacy"):
            scopes = [key[1]]
        elif key[0] == "policy":
            body = self.state.get("AccessPolicy", key[1], key[2]) or {}
            cluster_rules = ((body.get("spec") or {}).get("rbac") or {}).get("clusterRules")
            scopes = [key[1], CLUSTER] if cluster_rules else [key[1]]
        else:
            return
        self._echo_windows.mark(scopes, time.monotonic())

    async def _audit_and_queue(self, scopes: set[str], direct: list[WorkKey]) -> None:
        if direct and len(self.queue) <= self.settings.workers:  # (behind a backlog it would not run soon)
            # Two CPU-bound threads share the interpreter: run side by side, both would finish later.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DIRECT_WORK_FIRST_SECONDS):
                    await self.queue.wait_settled(direct)
        audited, changed = await self._in_audit_thread(self._reaudit, scopes)
        work: set[WorkKey] = {("namespace", ns) for ns in audited if ns != CLUSTER}
        for ns in changed - {CLUSTER}:  # a policy's status follows its namespace's findings
            work |= {("policy", ns, name_of(p)) for p in self.state.in_namespace("AccessPolicy", ns)}
        for key in sorted(work):
            self.queue.add(key)

    # Admission parameters -----------------------------------------------------------------------

    def _admission_relevant(self, changes: list[Change]) -> bool:
        return admission_relevant(changes, self._admission_keys, self.settings.grant_ceiling_cluster_role)

    async def _admission_step(self) -> None:
        if not self.gate.is_open():
            self._admission_due = True  # the takeover writes them
            return
        # Shielded and remembered: stop() waits for a write in flight (a thread cannot be cancelled, and one
        # finishing after shutdown could re-create what a successor removed).
        self._admission_inflight = asyncio.ensure_future(asyncio.to_thread(self._sync_admission))
        try:
            deferred = await asyncio.shield(self._admission_inflight)
            self._admission_due = bool(deferred)
            if deferred:
                self._loop.call_later(deferred, self._wake.set)
        except Exception:
            logger.exception(f"Admission policies could not be written; retrying in {ADMISSION_RETRY_SECONDS:g} s.")
            self._admission_due = True
            self._loop.call_later(ADMISSION_RETRY_SECONDS, self._wake.set)

    def _sync_admission(self) -> float:
        """Compute the parameters from the watch cache and write the admission objects whose content changed
        (the first time: all of them, pruning what is no longer rendered). Returns how long the policies were
        held back (0: written)."""
        assert self.admission is not None
        first = self._admission_identity is None
        if self._admission_identity is None:
            self._admission_identity = (owner_of(self.api, self.settings), own_username(self.api))
        owner, username = self._admission_identity
        owners = [obj for _, kind in OWNER_KINDS for obj in self.state.objects(kind)]
        ceiling = self.state.get("ClusterRole", "", self.settings.grant_ceiling_cluster_role)
        with self._audit_lock:
            passed = self.audit.passed_expiries()
        parameters = parameters_of(owners, ceiling, self.settings, self.clock.now(), passed, username)
        desired = desired_admission(self.settings, parameters, owner)
        result = self.admission.write(self.api, self.settings, desired, prune=first, now=self.clock.now())
        self._admission_keys = frozenset(parameters.owner_exemptions)
        self.metrics.observe_admission(parameters.floor.timestamp(), result.written)
        if result.deferred_seconds:
            # The parameter kind is newer than kube-apiserver's discovery cache: the policies would refuse
            # everything they match until it knows the kind (k8s/admission.py). Come back when it does.
            self._admission_identity = None  # (so the next step writes and prunes everything)
            logger.info(
                f"Admission policies wait {result.deferred_seconds:.0f} s for kube-apiserver to know the "
                "parameter kind (a newly installed CRD)."
            )
            return result.deferred_seconds
        if first or result.applied or result.pruned:
            logger.info(
                f"Admission policies: {result.applied} written, {result.pruned} pruned, {len(result.rules)} rules "
                f"(floor {parameters.floor.isoformat()})."
            )
        return 0.0

    def _reaudit(self, scopes: set[str]) -> tuple[set[str], set[str]]:
        """Re-audit scopes (ALL expands to every scope); returns the concrete scopes audited and those whose
        results changed."""
        started = time.monotonic()
        self._reaudits += 1
        ctx = self.settings.audit_context(now=self.clock.now())
        with self._audit_lock:
            if ALL in scopes:
                everything = {CLUSTER, *self.audit.scopes, *(name_of(ns) for ns in self.state.objects("Namespace"))}
                scopes = (scopes - {ALL}) | everything
            with self._index_lock:
                snapshot = scoped_snapshot(self.state, self.audit.index, scopes)
            changed = self.audit.update(self.state, ctx, scopes, snapshot)
            current = [f for scope in scopes for f in self.audit.findings_in(scope)]
        if self.reports is not None and changed:
            self.reports.changed(changed)
        self.events.record(current, self._uid_of, scopes)
        self._publish(time.monotonic() - started, findings_changed=bool(changed))
        return scopes, changed

    def _accepts_content(self, namespace: str) -> bool:
        """The namespace exists and is not terminating (a terminating one refuses new objects)."""
        home = self.state.get("Namespace", "", namespace)
        return home is not None and not (home.get("metadata") or {}).get("deletionTimestamp")

    def _uid_of(self, kind: str, namespace: str, name: str) -> str | None:
        """The object's uid, for an Event about it; None when there is nothing to post to (gone, or in a namespace
        that is terminating and refuses new content)."""
        if namespace and not self._accepts_content(namespace):
            return None
        obj = self.state.get(kind, namespace, name)
        return None if obj is None else str((obj.get("metadata") or {}).get("uid") or "") or None

    def _publish(self, seconds: float, findings_changed: bool = True) -> None:
        """Publish the current result; the cluster-wide totals are assembled (and sorted) again only when some
        scope's result changed: most re-audits (the echo of our own writes) change nothing."""
        with self._audit_lock:
            if findings_changed or self._totals is None:
                self._totals = self.audit.totals()
            totals = self._totals
            # Each scope's own sequences: the metrics recount only the scopes whose sequences are new.
            by_scope = {scope: (result.findings, result.capabilities) for scope, result in self.audit.scopes.items()}
        namespaces = ClusterSnapshot(namespaces=self.state.objects("Namespace"))
        classes = namespace_classes(namespaces, self.settings.audit_context(now=self.clock.now()))
        self.metrics.publish_scan(
            ScanResult(
                findings=totals.findings,
                subject_capabilities=totals.capabilities,
                namespace_controls=totals.controls,
                exemptions=totals.exemptions,
                namespace_classes=classes,
                by_scope=by_scope,
                completed_at=self.clock.now().timestamp(),
                duration_seconds=seconds,
            )
        )
        self._published_findings = totals.findings
        if findings_changed:
            self._loop.call_soon_threadsafe(self._reports_due.set)
        self.metrics.set_managed_objects(self._managed_counts())
        self.metrics.set_policies(self._policy_counts())
        self._published_at = time.monotonic()

    async def _write_reports(self) -> None:
        """Policy reports follow the findings at a calmer pace than metrics: a sync at most every REPORTS_SECONDS,
        of the scopes whose findings changed, writing only reports whose content changed. A long write (start-up)
        goes REPORT_WRITES_PER_STEP at a time, each step after the coordinator has handled what arrived."""
        assert self.reports is not None
        while True:
            await self._reports_due.wait()
            self._reports_due.clear()
            if not self.gate.is_open():
                continue  # the takeover asks again
            if not self.reports.available:
                continue  # the CRDs' watch sets it due again when they are served
            await self._coordinator_idle.wait()  # fresh events first
            findings = self._published_findings  # what _publish just assembled: not a second totals()
            if self.extra_findings is not None:
                findings = [*findings, *self.extra_findings()]
            # A terminating namespace refuses new content (403): its report goes with it.
            closing = {name_of(ns) for ns in self.state.objects("Namespace") if not self._accepts_content(name_of(ns))}
            if closing:
                findings = [f for f in findings if f.namespace not in closing]
            writes = 0
            try:
                writes = await asyncio.to_thread(self.reports.sync, self.api, findings, (), REPORT_WRITES_PER_STEP)
                settled = self.reports.settled
            except Exception:  # reports are an output like metrics: a failure must not stop the core
                logger.exception("Policy reports were not written; retrying.")
                settled = False
            if not settled:  # the findings may not change again soon: do not wait for them to
                self._reports_due.set()
                if writes >= REPORT_WRITES_PER_STEP:  # more to write, nothing failed: the next step at once
                    continue
            await asyncio.sleep(REPORTS_SECONDS)

    def _report_crds_changed(self, served: bool) -> None:  # the CRD watch's threads
        self._loop.call_soon_threadsafe(self._set_reports_served, served)

    def _set_reports_served(self, served: bool) -> None:
        assert self.reports is not None
        if served == self.reports.available and self._reports_announced:
            return
        if served:
            logger.info("OpenReports CRDs are served; writing policy reports.")
            self.reports.changed(None)
        elif self.reports.available:
            logger.warning("OpenReports CRDs (openreports.io) are gone; reports are written again once they return.")
            self.reports.forget()
        else:
            logger.info("OpenReports CRDs (openreports.io) are not installed; reports are written once they are.")
        self._reports_announced = True
        self.reports.available = served
        self._reports_due.set()

    def refresh_reports(self) -> None:
        """Thread-safe: the extra findings changed, write the reports again."""
        self._loop.call_soon_threadsafe(self._reports_due.set)

    def _managed_counts(self) -> dict[str, int]:
        return {kind: self.state.count_labelled(kind) for kind in MANAGED_KINDS}

    def _policy_counts(self) -> dict[str, int]:
        counts = Counter({"ready": 0, "not-ready": 0, "refused": 0})
        for policy in self.state.objects("AccessPolicy"):
            conditions = (policy.get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready is not None and ready.get("status") == "True":
                counts["ready"] += 1
            elif ready is not None and str(ready.get("reason", "")).startswith("GrantCeiling"):
                counts["refused"] += 1
            else:
                counts["not-ready"] += 1
        return dict(counts)

    def _enqueue_everything(self) -> None:
        for ns in self.state.objects("Namespace"):
            self.queue.add(("namespace", name_of(ns)))
            if _has_legacy_marks(ns):
                self.queue.add(("legacy", name_of(ns)))
        for policy in self.state.objects("AccessPolicy"):
            self.queue.add(("policy", namespace_of(policy), name_of(policy)))

    def _enqueue_takeover(self) -> None:
        """Everything, plus what is done once per start of leadership (not at every drift re-check)."""
        self._enqueue_everything()
        if self.admission is None:
            self.queue.add(ADMISSION_OFF)
        self.queue.add(ACCESS_ADMISSION)

    def _work_for(self, change: Change) -> set[WorkKey]:
        """Reconcile work a change asks for directly (the audit adds namespace-wide work on top)."""
        obj = change.new if change.new is not None else change.old
        assert obj is not None
        namespace = namespace_of(obj)
        if change.kind == "AccessPolicy":
            old_meta = (change.old or {}).get("metadata") or {}
            new_meta = (change.new or {}).get("metadata") or {}
            # Deleted, or our finalizer removed (put it back); not the echo of our adding it (a second reconcile of
            # every policy at start-up), nor another finalizer's coming and going.
            finalizing = new_meta.get("deletionTimestamp") != old_meta.get("deletionTimestamp") or (
                POLICY_FINALIZER in (old_meta.get("finalizers") or [])
                and POLICY_FINALIZER not in (new_meta.get("finalizers") or [])
            )
            if change.new is not None and (
                change.old is None or old_meta.get("generation") != new_meta.get("generation") or finalizing
            ):
                return {("policy", namespace, name_of(obj))}
            return set()
        if change.kind in POLICY_KINDS:  # an owned object changed, or a name a policy wants was freed/taken
            return {("policy", namespace, name_of(p)) for p in self.state.in_namespace("AccessPolicy", namespace)}
        if change.kind in ("ClusterRole", "ClusterRoleBinding") and labels_of(obj).get(f"{API_GROUP}/policy-uid"):
            owner_namespace = labels_of(obj).get(f"{API_GROUP}/policy-namespace", "")
            return {
                ("policy", owner_namespace, name_of(p))
                for p in self.state.in_namespace("AccessPolicy", owner_namespace)
            }
        if (change.kind == "ClusterRole" and name_of(obj) == self.settings.grant_ceiling_cluster_role) or (
            change.kind == "EndpointSlice"
        ):
            return {("policy", namespace_of(p), name_of(p)) for p in self.state.objects("AccessPolicy")}
        if change.kind == "Namespace" and change.new is not None and _has_legacy_marks(change.new):
            return {("legacy", name_of(obj))}
        return set()

    # Workers ------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._run_key(key)  # type: ignore[arg-type]
            finally:
                self.queue.done(key)

    async def _run_key(self, key: WorkKey) -> None:
        handlers: dict[str, Callable[[WorkKey], Any]] = {
            "policy": self._sync_policy,
            "namespace": self._sync_namespace,
            "legacy": self._remove_legacy_marks,
            "admission-off": self._remove_admission,
            "access-admission": self._install_access_admission,
        }
        if not self.gate.is_open():
            return  # a standby plans nothing; the takeover queues everything again
        started = time.monotonic()
        outcome = "success"
        self._mark_echo_window(key)  # (the echoes of the first writes arrive before the handler returns)
        try:
            outcome = await self._loop.run_in_executor(self._work_threads, handlers[key[0]], key) or "success"
            OUTAGE.succeeded()
        except NotLeaderError as error:  # the fence passed mid-work: the next leader redoes it from its cache
            logger.info(f"{key[0].capitalize()} {'/'.join(key[1:])} stopped: {error}")
            outcome = "error"
        except API_FAILURES as error:
            outcome = "error"
            if is_connection_error(error):
                OUTAGE.failed(error)
            elif is_transient(error):
                OUTAGE.retried(retry_reason(error))
            if is_transient(error):
                self.queue.add_after(key, retry_delay())
            else:
                detail = api_error_message(error) if isinstance(error, kubernetes.client.ApiException) else error
                logger.error(f"{key[0].capitalize()} {'/'.join(key[1:])} failed permanently: {detail}")
        except Exception:
            outcome = "error"
            logger.exception(f"{key[0].capitalize()} {'/'.join(key[1:])} failed; retrying after the drift interval.")
        finally:
            self._mark_echo_window(key)
            self.metrics.observe_reconcile(key[0], outcome, time.monotonic() - started)

    def _sync_policy(self, key: WorkKey) -> str | None:
        _, namespace, name = key
        body = self.state.get("AccessPolicy", namespace, name)
        if body is None:
            return None
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            if POLICY_FINALIZER in finalizers:
                self._finalize_policy(key, body, finalizers)
            return None
        if not self._accepts_content(namespace):
            return None  # a terminating namespace refuses new content; its objects go with it
        if POLICY_FINALIZER not in finalizers:
            # A merge patch of the whole list, guarded by the resourceVersion (a conflict is retried): not a
            # server-side apply, which would also drop every field this field manager applied before and leaves
            # out now (`access-hygiene local --examples` applies the examples' specs under the same manager).
            resources.patch_merge(
                self.api,
                body["apiVersion"],
                "AccessPolicy",
                name,
                {
                    "metadata": {
                        "resourceVersion": body["metadata"]["resourceVersion"],
                        "finalizers": [*finalizers, POLICY_FINALIZER],
                    }
                },
                namespace,
            )
        findings = self.audit.findings_in(namespace)
        now = self.clock.now()
        result = sync_policy(self.api, body, self.settings, now, self.state, findings, self.discovery)
        if status_changed(body.get("status"), result.status):
            resources.patch_merge(
                self.api, body["apiVersion"], "AccessPolicy", name, {"status": result.status}, namespace, "status"
            )
        # One Warning Event per refusal: not again for a status already saying it (a restart), nor for one this
        # process announced whose status patch the watch has not delivered yet.
        news = refusal_news(body.get("status"), result.status)
        refusal = (*news, result.status.get("observedGeneration")) if news else None
        if refusal is not None and self._refusals.get(key) != refusal and self.settings.warning_events:
            self.events.announce(render_policy_event(body, *refusal[:2], now))
        if refusal is not None:
            self._refusals[key] = refusal
        elif result.outcome == "success":
            self._refusals.pop(key, None)
        if result.writes:
            logger.info(f"AccessPolicy {namespace}/{name} reconciled with {result.writes} write(s): {result.outcome}.")
        return result.outcome

    def _sync_namespace(self, key: WorkKey) -> None:
        name = key[1]
        namespace = self.state.get("Namespace", "", name)
        if namespace is None or not self._accepts_content(name):
            return
        with self._index_lock:
            snapshot = scoped_snapshot(self.state, self.audit.index, {name})
        findings = self.audit.findings_in(name)
        result = sync_namespace(self.api, namespace, self.settings, self.clock.now(), snapshot, findings)
        if result.writes:
            logger.info(f"Namespace {name} hygiene applied with {result.writes} write(s) in {result.mode} mode.")

    def _remove_legacy_marks(self, key: WorkKey) -> None:
        """Drop the finalizer (and kopf bookkeeping) older versions put on Namespaces they do not own."""
        name = key[1]
        live = resources.get(self.api, "v1", "Namespace", name)
        if live is None or not _has_legacy_marks(live):
            return
        metadata = live.get("metadata") or {}
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]}
        ]
        finalizers = list(metadata.get("finalizers") or [])
        if LEGACY_FINALIZER in finalizers:
            operations.append({"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(LEGACY_FINALIZER)}"})
        for annotation in LEGACY_ANNOTATIONS:
            if annotation in (metadata.get("annotations") or {}):
                operations.append({"op": "remove", "path": "/metadata/annotations/" + annotation.replace("/", "~1")})
        resources.patch_json(self.api, "v1", "Namespace", name, operations)
        logger.info(f"Namespace {name}: removed the finalizer and annotations an earlier version added.")

    def _finalize_policy(self, key: WorkKey, body: dict[str, Any], finalizers: list[str]) -> None:
        """A deleted AccessPolicy: remove what it generated (cluster-scoped objects have no owner GC), then
        release it. The controller holds the finalizer, not kopf, so a standby never touches it (docs/ha.md)."""
        self._refusals.pop(key, None)
        deleted = prune_policy_objects(self.api, body, self.state)
        metadata = body["metadata"]
        index = finalizers.index(POLICY_FINALIZER)
        resources.patch_json(
            self.api,
            body["apiVersion"],
            "AccessPolicy",
            metadata["name"],
            [
                # Guarded by the entry itself, not the resourceVersion: a status write meanwhile changes nothing here.
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": POLICY_FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ],
            metadata["namespace"],
        )
        logger.info(f"AccessPolicy {'/'.join(key[1:])} deleted; removed {deleted} generated object(s).")

    def _remove_admission(self, _key: WorkKey) -> None:
        """Admission is switched off: remove what an earlier configuration installed (once per takeover)."""
        removed = delete_admission(self.api, self.settings)
        if removed:
            logger.info(f"Admission policies removed ({removed} objects): admission is switched off.")

    def _install_access_admission(self, _key: WorkKey) -> None:
        """The just-in-time access policies guard their own kinds: always on, whatever admission.enabled says
        (once per takeover; the chart installs them itself when the operator may not)."""
        applied = apply_access_admission(self.api)
        if applied:
            logger.info(f"Just-in-time access admission policies applied ({applied} objects).")


def admission_relevant(changes: Iterable[Change], owner_keys: frozenset[str], ceiling: str) -> bool:
    """Can the batch change the admission parameters? An exemption added, changed or removed anywhere (the
    floor, the owner exemptions), an owner-kind object owned by one with owner-exemption entries (owner_keys), the
    grant ceiling ClusterRole."""
    for change in changes:
        for obj in (change.old, change.new):
            if obj is None:
                continue
            metadata = obj.get("metadata") or {}
            if any(str(k).startswith(EXEMPT_ANNOTATION) for k in metadata.get("annotations") or {}):
                return True
            if change.kind == "ClusterRole" and name_of(obj) == ceiling:
                return True
            if change.kind in OWNER_KIND_NAMES:
                namespace = namespace_of(obj)
                for ref in metadata.get("ownerReferences") or []:
                    if f"{ref.get('kind')}.{namespace}.{ref.get('name')}" in owner_keys:
                        return True
    return False


def _home_of(change: Change) -> str:
    """The scope an object lives in: its namespace, a Namespace's own name, CLUSTER for other cluster-scoped kinds."""
    obj = change.new if change.new is not None else change.old
    assert obj is not None
    return name_of(obj) if change.kind == "Namespace" else namespace_of(obj)


def _has_legacy_marks(namespace: dict[str, Any]) -> bool:
    metadata = namespace.get("metadata") or {}
    return LEGACY_FINALIZER in (metadata.get("finalizers") or []) or any(
        a in (metadata.get("annotations") or {}) for a in LEGACY_ANNOTATIONS
    )
