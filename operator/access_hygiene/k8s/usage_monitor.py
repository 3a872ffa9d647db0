"""Continuous mode: audit webhook -> bounded usage counters -> unused grants in metrics and status.unusedRules.

Opt-in (settings `audit_webhook_enabled`). The receiver (k8s/audit_webhook.py) records requests into
`UsageCounters` (engine/usage/counters.py) under a lock. Every `usage_interval_seconds` a task judges the
ServiceAccounts observed for at least `usage_min_window_seconds` with complete data against the RBAC objects
of the watch-fed ClusterState (no API reads), publishes the metrics, and writes `status.unusedRules` of each
AccessPolicy whose ServiceAccount was judged, with a merge patch, only when it changes. A policy whose
ServiceAccount is not judged (yet, or no longer: the counters start empty with every operator start) has no
`unusedRules`. The counters live in memory. With several replicas (docs/ha.md) a standby follows the leader's
counters through the mirror (k8s/usage_mirror.py), so a takeover keeps every observation window; a restart of the
only replica starts new windows.
"""

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes

from access_hygiene.clock import SYSTEM_CLOCK, Clock
from access_hygiene.engine.ground.snapshot import name_of, namespace_of
from access_hygiene.engine.rbac.permissions import PermissionIndex, is_excluded
from access_hygiene.engine.usage.aggregation import service_account_username
from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.engine.usage.counters import UsageCounters, record_all
from access_hygiene.engine.usage.judgement import (
    SubjectJudgement,
    grants_key,
    judge_subject,
    policy_service_account,
    rbac_snapshot,
    still_valid,
    unused_rules_patch,
)
from access_hygiene.engine.usage.replica import restore_snapshot, snapshot_to_wire
from access_hygiene.k8s import resources
from access_hygiene.k8s.audit_webhook import AuditWebhookServer, LeaderRelay, server_context
from access_hygiene.k8s.errors import API_FAILURES, api_error_message
from access_hygiene.k8s.leader import WriteGate
from access_hygiene.k8s.usage_mirror import MirrorFollower, MirrorHub, Subscription
from access_hygiene.k8s.watch_cache import ClusterState
from access_hygiene.metrics import UsageMetrics, UsageSnapshot
from access_hygiene.models.status import UnusedRule
from access_hygiene.settings import OperatorSettings

logger = logging.getLogger(__name__)

# A ServiceAccount gone from the cluster is forgotten once it sent nothing for this long.
FORGET_AFTER_SECONDS = 300.0
# CPU one judgement pass may spend on subjects that need judging afresh (~3 ms each for a ServiceAccount bound to
# `edit`); the rest wait for the next pass, so a burst (every ServiceAccount reaching the window together) is
# spread over several passes instead of holding a worker thread, and the GIL, for many seconds.
JUDGE_BUDGET_SECONDS = 2.0


@dataclass
class Judgement:
    """One pass: the judgement of every judged ServiceAccount, and the subject states (for the metrics)."""

    subjects: dict[tuple[str, str], SubjectJudgement] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    pending: set[tuple[str, str]] = field(default_factory=set)  # due, but left for the next pass (budget)


class UsageMonitor:
    """The receiver, the counters and the periodic judgement (see the module doc)."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        state: ClusterState,
        settings: OperatorSettings,
        metrics: UsageMetrics,
        clock: Clock = SYSTEM_CLOCK,
        gate: WriteGate | None = None,
    ) -> None:
        self.api = api
        self.clock = clock
        self.gate = gate if gate is not None else WriteGate(clock, elected=False)
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self.counters = UsageCounters(
            max_subjects=settings.usage_max_subjects, max_keys=settings.usage_max_keys_per_subject
        )
        self._lock = threading.Lock()
        # The leader's receiver as its Lease advertises it (set by the operator once the election runs).
        self.leader_url: Callable[[], str | None] = lambda: None
        # With election: the leader mirrors what it records to the standbys that follow it (docs/ha.md); a standby
        # follows the leader's counters (`following`, under the lock) and relays what it receives.
        self.hub: MirrorHub | None = None
        self.follower: MirrorFollower | None = None
        self.following = False
        relay = None
        if self.gate.elected:
            relay = LeaderRelay(
                self.gate.is_open,
                lambda: self.leader_url(),
                settings.audit_webhook_cert_file,
                settings.audit_webhook_token_file,
            )
            self.hub = MirrorHub()
            self.follower = MirrorFollower(
                settings.leader_election_identity or socket.gethostname(),
                self.gate.is_open,
                lambda: self.leader_url(),
                relay.token.current if relay.token is not None else (lambda: b""),
                relay.context,
                relay.pinned,
                self.apply_snapshot,
                self.apply_batch,
                self.unfollow,
            )
        self.server = AuditWebhookServer(
            settings.audit_webhook_addr,
            settings.audit_webhook_port,
            server_context(
                settings.audit_webhook_cert_file, settings.audit_webhook_key_file, settings.audit_webhook_client_ca_file
            ),
            settings.audit_webhook_token_file,
            self.record,
            metrics.count_request,
            metrics.count_events,
            settings.audit_webhook_max_body_bytes,
            relay,
            self if self.hub is not None else None,
            self.record_relayed,
        )
        self._task: asyncio.Task[None] | None = None
        self.judge_budget_seconds = JUDGE_BUDGET_SECONDS
        self._cache: dict[str, SubjectJudgement] = {}  # user name -> last judgement (judge() runs in one thread)

    # Receiver side (request threads) ----------------------------------------------------------------

    def record(self, requests: list[AuditRequest]) -> dict[str, int]:
        """A batch this replica takes as the leader (or alone): counted, then mirrored to every follower; returns
        once they all acknowledged it (or were dropped), so the API server hears 200 only then."""
        now = self.clock.now().timestamp()
        with self._lock:
            outcomes = record_all(self.counters, requests, now)
            pending = self.hub.publish(requests) if self.hub is not None else []
        if pending:
            assert self.hub is not None
            self.hub.wait(pending)
        return outcomes

    def record_relayed(self, requests: list[AuditRequest]) -> dict[str, int]:
        """A batch this standby relayed and the leader took: counted here only while this replica does not follow
        the leader's counters (it comes back in the mirror otherwise; counting it here too would count it twice)."""
        now = self.clock.now().timestamp()
        with self._lock:
            if self.following and not self.gate.is_open():
                return {}
            return record_all(self.counters, requests, now)

    # The mirror (docs/ha.md) ----------------------------------------------------------------------------------

    def leads(self) -> bool:
        return self.gate.is_open()

    def subscribe(self, name: str) -> tuple[Subscription, bytes] | None:
        """A standby follows this leader: the snapshot and the subscription, under one hold of the lock, so the
        stream carries exactly the batches recorded after the snapshot."""
        if self.hub is None:
            return None
        with self._lock:
            if not self.gate.is_open():
                return None
            wire = snapshot_to_wire(self.counters, self.clock.now().timestamp())
            return self.hub.subscribe(name), json.dumps(wire, separators=(",", ":")).encode() + b"\n"

    def unsubscribe(self, subscription: Subscription) -> None:
        if self.hub is not None:
            self.hub.remove(subscription)

    def apply_snapshot(self, wire: dict[str, Any]) -> bool:
        """The leader's counters replace this standby's; False (ignored) once this replica leads."""
        with self._lock:
            if self.gate.is_open():
                self.following = False
                return False
            restore_snapshot(self.counters, wire, self.clock.now().timestamp())
            self.following = True
            return True

    def apply_batch(self, requests: list[AuditRequest]) -> bool:
        with self._lock:
            if not self.following or self.gate.is_open():
                self.following = False
                return False
            record_all(self.counters, requests, self.clock.now().timestamp())
            return True

    def unfollow(self) -> None:
        with self._lock:
            self.following = False

    # Lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        if self.follower is not None:
            self.follower.start()
        self._task = asyncio.create_task(self._run(), name="access-hygiene-usage")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.follower is not None:
            await asyncio.to_thread(self.follower.stop)
        if self.hub is not None:
            self.hub.close_all()
        await asyncio.to_thread(self.server.stop)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.usage_interval_seconds)
            if not self.state.is_synced():
                continue
            if not self.gate.is_open():  # the leader judges, exports and writes; a standby only counts
                self.metrics.publish(None)
                if self.hub is not None:
                    self.hub.close_all()  # followers of a replica that no longer leads go to the new leader
                self._forget(self.clock.now().timestamp())  # as the leader does: the same subjects stay
                continue
            try:
                await asyncio.to_thread(self.sync, self.clock.now().timestamp())
            except Exception:  # an output like metrics: a failure must not stop the receiver or the operator
                logger.exception("Unused grants were not judged; retrying at the next interval.")

    # Judgement (worker thread) ------------------------------------------------------------------------

    def judge(self, now: float) -> Judgement:
        """Judge every ServiceAccount observed long enough. A subject whose usage version and applicable bindings
        are unchanged since the last pass keeps its judgement; the lock is held only to copy one subject's usage."""
        min_window = self.settings.usage_min_window_seconds
        self._forget(now)
        with self._lock:
            candidates = self.counters.judged_names(now, min_window)
            states = self.counters.state_counts(now, min_window)
        ctx = self.settings.audit_context(now=datetime.fromtimestamp(now, UTC))
        candidates = [(username, subject) for username, subject in candidates if not is_excluded(subject, ctx)]
        snapshot = rbac_snapshot(
            [subject for _, subject in candidates],
            self.state.objects("Role"),
            self.state.objects("ClusterRole"),
            self.state.objects("RoleBinding"),
            self.state.objects("ClusterRoleBinding"),
        )
        index = PermissionIndex.build(snapshot)
        managed = self._managed_service_accounts()
        cache: dict[str, SubjectJudgement] = {}
        result = Judgement(states=states)
        deadline, fresh = time.monotonic() + self.judge_budget_seconds, 0
        for username, subject in candidates:
            where = (subject.namespace, subject.name)
            with_rules = where in managed
            key = grants_key(index, subject)
            previous = self._cache.get(username)
            with self._lock:
                observed = self.counters.subjects.get(username)
                if observed is None:
                    continue
                version = observed.version
                valid = still_valid(previous, version, key, with_rules)
                over_budget = not valid and fresh > 0 and time.monotonic() > deadline
                usage = None if valid or over_budget else observed.usage()
            if usage is not None:
                judged = judge_subject(index, subject, usage, version, key, with_rules)
                fresh += 1
            elif previous is None:
                result.pending.add(where)
                continue
            else:
                judged = previous
                if over_budget:
                    # Over this pass's budget (every ServiceAccount reaching the window at once): it is judged
                    # again next pass; meanwhile its last judgement answers the metric, and its status is left.
                    result.pending.add(where)
            cache[username] = result.subjects[where] = judged
        self._cache = cache
        return result

    def _forget(self, now: float) -> None:
        with self._lock:
            self.counters.forget(
                lambda namespace, name: self.state.get("ServiceAccount", namespace, name) is not None,
                now,
                max(FORGET_AFTER_SECONDS, 2 * self.settings.usage_interval_seconds),
            )

    def _managed_service_accounts(self) -> set[tuple[str, str]]:
        found = set()
        for policy in self.state.objects("AccessPolicy"):
            service_account = policy_service_account(policy)
            if service_account is not None:
                found.add((namespace_of(policy), service_account))
        return found

    def sync(self, now: float) -> int:
        """One pass: judge, publish the metrics, write the statuses that changed. Returns the writes."""
        judgement = self.judge(now)
        self.metrics.publish(
            UsageSnapshot(
                unused={key: judged.unused_count for key, judged in judgement.subjects.items()},
                subjects=judgement.states,
            )
        )
        writes = 0
        for policy in self.state.objects("AccessPolicy"):
            if self._write_status(policy, judgement):
                writes += 1
        return writes

    def _write_status(self, policy: dict[str, Any], judgement: Judgement) -> bool:
        namespace, name = namespace_of(policy), name_of(policy)
        service_account = policy_service_account(policy)
        if service_account is None or (namespace, service_account) in judgement.pending:
            return False
        desired: list[UnusedRule] | None = None
        judged = judgement.subjects.get((namespace, service_account))
        if judged is not None:
            if judged.rules is None:
                return False  # the policy appeared during this pass: its entries come with the next one
            desired = list(judged.rules)
        patch = unused_rules_patch(policy.get("status"), desired)
        if patch is None:
            return False
        try:
            resources.patch_merge(
                self.api, str(policy.get("apiVersion")), "AccessPolicy", name, patch, namespace, "status"
            )
        except API_FAILURES as error:
            detail = api_error_message(error) if isinstance(error, kubernetes.client.ApiException) else error
            logger.warning(f"AccessPolicy {namespace}/{name}: status.unusedRules not written: {detail}")
            return False
        what = "removed" if desired is None else f"set to {len(desired)} entries"
        user = service_account_username(namespace, service_account)
        logger.info(f"AccessPolicy {namespace}/{name}: status.unusedRules {what} (usage of {user}).")
        return True
