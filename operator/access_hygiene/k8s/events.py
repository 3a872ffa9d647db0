"""Warning Events on offending objects, so `kubectl describe rolebinding X` shows the finding.

One Event per new finding (none for an unchanged one, again only after it went away and came back),
rate-limited by a token bucket, with a bounded backlog: a burst of thousands of findings never turns
into thousands of API writes at once.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene import FIELD_MANAGER
from access_hygiene.clock import SYSTEM_CLOCK, Clock
from access_hygiene.engine.audit.runner import sort_key
from access_hygiene.k8s import resources
from access_hygiene.k8s.errors import API_FAILURES
from access_hygiene.models.findings import Finding
from access_hygiene.render.names import object_name

logger = logging.getLogger(__name__)

EVENT_REASON = "AccessHygieneViolation"
EVENT_KINDS = frozenset({"RoleBinding", "ClusterRoleBinding", "Role", "ClusterRole"})
API_VERSIONS = {
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
}
# Events about cluster-scoped objects live in "default", where kubectl describe finds them.
CLUSTER_EVENT_NAMESPACE = "default"
FindingKey = tuple[str, str, str, str, str]


def _warning_event(
    name: str, namespace: str, involved: dict[str, str], reason: str, message: str, now: datetime
) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "type": "Warning",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def render_event(finding: Finding, uid: str, now: datetime) -> dict[str, Any]:
    obj = finding.object
    subject = f" ({finding.subject})" if finding.subject else ""
    return _warning_event(
        object_name(obj.name, f"{now.timestamp():.0f}", finding.rule_id.lower(), max_length=253),
        obj.namespace or CLUSTER_EVENT_NAMESPACE,
        {
            "apiVersion": API_VERSIONS.get(obj.kind, obj.api_version),
            "kind": obj.kind,
            "name": obj.name,
            "namespace": obj.namespace,
            "uid": uid,
        },
        EVENT_REASON,
        f"{finding.rule_id} [{finding.severity.value}]{subject}: {finding.message}",
        now,
    )


def render_policy_event(policy: Mapping[str, Any], reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A Warning Event on an AccessPolicy (`kubectl describe accesspolicy` shows it): why it was refused."""
    metadata = policy.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    generation = f"g{metadata.get('generation') or 0}"
    return _warning_event(
        object_name(name, generation, f"{now.timestamp():.0f}", reason.lower(), max_length=253),
        namespace,
        {
            "apiVersion": str(policy.get("apiVersion") or ""),
            "kind": "AccessPolicy",
            "name": name,
            "namespace": namespace,
            "uid": str(metadata.get("uid") or ""),
        },
        reason,
        message,
        now,
    )


class EventRecorder:
    """Turns newly appeared findings into Warning Events at a bounded rate (a daemon thread writes)."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        rate: float = 5.0,
        burst: int = 20,
        backlog: int = 1000,
        startup_backlog: int = 200,
        clock: Clock = SYSTEM_CLOCK,
        may_post: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.clock = clock
        # A standby (docs/ha.md) remembers what it would announce, so a takeover does not repeat the leader's
        # Events, but posts nothing.
        self.may_post = may_post
        self.rate = rate
        self.burst = burst
        self.dropped = 0
        self.posted = 0
        # Announced (or existing at start) findings, by scope (a key's namespace): a re-audit forgets what went away
        # in its own scopes without walking every finding's key (~50 ms per re-audit at 56,000 findings).
        self._emitted: dict[str, set[FindingKey]] = {}
        self._pending: deque[tuple[Finding, str]] = deque(maxlen=backlog)
        # Events rendered by the caller (a refused AccessPolicy): posted before findings, at the same rate.
        self._announcements: deque[dict[str, Any]] = deque(maxlen=backlog)
        # Findings that existed at start: announced too, but only after every new one, and only the most severe.
        self._startup: deque[tuple[Finding, str]] = deque(maxlen=startup_backlog)
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()

    def seed(self, findings: Iterable[Finding], uid_of: Any) -> None:
        """Findings that exist at start: remembered, and the most severe RBAC ones announced at low priority
        (Events expire after an hour, so a restarted operator shows them again)."""
        with self._wake:
            # Most severe first, then the audit's order (the findings come grouped by scope, not sorted).
            for finding in sorted(findings, key=lambda f: (-f.severity.rank, sort_key(f))):
                if finding.exempted:
                    continue
                key = finding.key
                self._emitted.setdefault(key[1], set()).add(key)
                if finding.object.kind in EVENT_KINDS and len(self._startup) < (self._startup.maxlen or 0):
                    uid = uid_of(finding.object.kind, finding.object.namespace, finding.object.name)
                    if uid is not None:
                        self._startup.append((finding, str(uid)))
            self._wake.notify()

    def record(self, current: Iterable[Finding], uid_of: Any, scopes: set[str]) -> None:
        """current: every finding in the given scopes now. New ones (not exempted, about RBAC objects) get an
        Event; keys that went away in these scopes are forgotten so they are announced if they return."""
        now_keys: set[FindingKey] = set()
        with self._wake:
            emitted = self._emitted
            for finding in current:
                if finding.exempted:
                    continue
                key = finding.key
                now_keys.add(key)
                known = emitted.get(key[1])
                if (known is not None and key in known) or finding.object.kind not in EVENT_KINDS:
                    continue
                uid = uid_of(finding.object.kind, finding.object.namespace, finding.object.name)
                if uid is None:
                    continue
                emitted.setdefault(key[1], set()).add(key)
                if len(self._pending) == self._pending.maxlen:
                    self.dropped += 1
                self._pending.append((finding, str(uid)))
            for scope in scopes:  # what went away here is forgotten (announced again if it returns)
                known = emitted.get(scope)
                if known is not None:
                    known &= now_keys
                    if not known:
                        del emitted[scope]
            self._wake.notify()

    def announce(self, event: dict[str, Any]) -> None:
        """Post a rendered Event (best effort, rate-limited like the findings' Events)."""
        with self._wake:
            if len(self._announcements) == self._announcements.maxlen:
                self.dropped += 1
            self._announcements.append(event)
            self._wake.notify()

    def _run(self) -> None:
        tokens = float(self.burst)
        last = time.monotonic()
        while True:
            with self._wake:
                while not self._announcements and not self._pending and not self._startup and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                now = time.monotonic()
                tokens = min(float(self.burst), tokens + (now - last) * self.rate)
                last = now
                if tokens < 1.0:
                    wait = (1.0 - tokens) / self.rate
                    self._wake.wait(wait)
                    continue
                if not self.may_post():
                    self._announcements.clear()
                    self._pending.clear()
                    self._startup.clear()
                    continue
                if self._announcements:
                    event = self._announcements.popleft()
                else:
                    finding, uid = (self._pending or self._startup).popleft()
                    event = render_event(finding, uid, self.clock.now())
                tokens -= 1.0
            try:
                resources.create(self.api, event)
                self.posted += 1
            except API_FAILURES as error:  # an Event is best effort: never retried, never fatal
                about = event["involvedObject"]
                logger.debug(f"Event {event['reason']} on {about['kind']} {about['name']} not posted: {error}")
