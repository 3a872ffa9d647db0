"""Bounded per-ServiceAccount usage counters for the operator's continuous mode (audit webhook).

Pure bookkeeping, no clock: every call that needs the time takes `now` (unix seconds, the receiver's clock).
The counters keep, per ServiceAccount user name, one lean record per distinct allowed request
(verb/group/resource/subresource/namespace/URL, object names up to `name_cap`) and hand out engine/usage/aggregation.py
`SubjectUsage` copies, so `unused_grants()` judges them exactly like `access-hygiene unused` judges a log.

Bounds (memory is the product of the two caps, whatever the request rate):
- at most `max_subjects` ServiceAccounts; requests of further ones are dropped and counted;
- at most `max_keys` distinct records per ServiceAccount; a request that would add one more is dropped and
  the subject is marked incomplete. An incomplete subject is never judged: a dropped record may be exactly
  the use of a grant, and an unused finding must never be a guess.

"Observed long enough": a subject is judged once `now - first_seen >= min_window_seconds`, where first_seen
is when the receiver recorded its first request (the receiver's clock, not the API server's timestamps, so
a replayed or skewed event cannot make a window look longer than it was observed).
Denied requests are not kept (they grant nothing), nor are requests of users other than ServiceAccounts.
"""

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from access_hygiene.engine.rbac.permissions import SA_USER_PREFIX
from access_hygiene.engine.usage import DEFAULT_MAX_KEYS, DEFAULT_MAX_SUBJECTS
from access_hygiene.engine.usage.aggregation import KeyUsage, SubjectUsage, UsageKey
from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.models.findings import Subject

DEFAULT_NAME_CAP = 16

# What happened to one parsed request.
Outcome = Literal["recorded", "ignored", "dropped"]
# Where a subject stands: judged (window long enough, complete data), observing (window too short),
# incomplete (a record was dropped: never judged).
SubjectState = Literal["judged", "observing", "incomplete"]
SUBJECT_STATES: tuple[SubjectState, ...] = ("judged", "observing", "incomplete")


def parse_service_account_user(username: str) -> tuple[str, str] | None:
    """`system:serviceaccount:ns:name` -> (ns, name); None for any other user."""
    if not username.startswith(SA_USER_PREFIX):
        return None
    namespace, _, name = username[len(SA_USER_PREFIX) :].partition(":")
    if not namespace or not name or ":" in name:
        return None
    return namespace, name


class Seen:
    """What continuous mode keeps per distinct request: only what judging a grant reads (the object names, for
    grants restricted by resourceNames). Lean on purpose: one of these per ServiceAccount and request shape, and
    most requests name one object or none, so one name is kept as a plain string."""

    __slots__ = ("names", "overflow", "unnamed")

    def __init__(self) -> None:
        self.names: str | set[str] | None = None  # None: no name yet; str: exactly one name
        self.overflow = False  # more than name_cap distinct names: the names are no longer complete
        self.unnamed = False

    def add(self, name: str, name_cap: int) -> bool:
        """Record one request's object name ("" for none); returns whether anything changed."""
        if not name:
            changed, self.unnamed = not self.unnamed, True
            return changed
        if self.overflow or self.names == name:
            return False
        if self.names is None:
            self.names = name
        elif isinstance(self.names, str):
            if name_cap >= 2:
                self.names = {self.names, name}
            else:
                self.overflow, self.names = True, None
        elif name in self.names:
            return False
        elif len(self.names) >= name_cap:
            self.overflow, self.names = True, None
        else:
            self.names.add(name)
        return True

    def name_set(self) -> set[str]:
        if self.names is None:
            return set()
        return {self.names} if isinstance(self.names, str) else set(self.names)

    def usage(self) -> KeyUsage:
        """As engine/usage/aggregation.py's record (a copy: the receiver keeps changing this one)."""
        return KeyUsage(names=self.name_set(), unnamed=self.unnamed, overflow=self.overflow)


@dataclass(slots=True)
class ObservedSubject:
    seen: dict[UsageKey, Seen] = field(default_factory=dict)
    requests: int = 0
    first_seen: float = math.inf  # the receiver's clock
    last_seen: float = -math.inf
    dropped_keys: int = 0  # requests not kept because the key cap was reached
    version: int = 0  # bumped whenever what a judgement reads changes (records, names): callers cache by it

    @property
    def complete(self) -> bool:
        return self.dropped_keys == 0

    def usage(self) -> SubjectUsage:
        """A SubjectUsage copy for unused_grants() (taken under the caller's lock)."""
        allowed = {key: record.usage() for key, record in self.seen.items()}
        return SubjectUsage(allowed=allowed, requests=self.requests, first=self.first_seen, last=self.last_seen)


@dataclass
class UsageCounters:
    """Usage per ServiceAccount user name, bounded (see the module doc). Not thread-safe: callers lock."""

    max_subjects: int = DEFAULT_MAX_SUBJECTS
    max_keys: int = DEFAULT_MAX_KEYS
    name_cap: int = DEFAULT_NAME_CAP
    subjects: dict[str, ObservedSubject] = field(default_factory=dict)
    dropped_subjects: int = 0  # requests dropped because max_subjects ServiceAccounts were already kept
    dropped_keys: int = 0  # requests dropped by a subject's key cap (every subject)
    recorded: int = 0

    def add(self, request: AuditRequest, now: float) -> Outcome:
        """Record one parsed request received at `now`."""
        if not request.allowed or parse_service_account_user(request.username) is None:
            return "ignored"
        observed = self.subjects.get(request.username)
        if observed is None:
            if len(self.subjects) >= self.max_subjects:
                self.dropped_subjects += 1
                return "dropped"
            observed = self.subjects[sys.intern(request.username)] = ObservedSubject()
        key: UsageKey = (request.verb, request.api_group, request.resource, request.subresource, request.namespace,
                         request.path)  # fmt: skip
        record = observed.seen.get(key)
        if record is None:
            if len(observed.seen) >= self.max_keys:
                observed.dropped_keys += 1
                self.dropped_keys += 1
                observed.version += 1
                return "dropped"
            # Interned: the same verbs, resources and namespaces recur across subjects; keep one copy of each.
            key = tuple(sys.intern(part) for part in key)  # type: ignore[assignment]
            record = observed.seen[key] = Seen()
            observed.version += 1
        if record.add(request.name, self.name_cap):
            observed.version += 1
        if request.counted:
            observed.requests += 1
        observed.first_seen = min(observed.first_seen, now)
        observed.last_seen = max(observed.last_seen, now)
        self.recorded += 1
        return "recorded"

    def state(self, username: str, now: float, min_window_seconds: float) -> SubjectState | None:
        """None for a subject with no recorded request (never judged: no data is not evidence)."""
        observed = self.subjects.get(username)
        if observed is None or not observed.seen:
            return None
        if not observed.complete:
            return "incomplete"
        return "judged" if now - observed.first_seen >= min_window_seconds else "observing"

    def judged_names(self, now: float, min_window_seconds: float) -> list[tuple[str, Subject]]:
        """(user name, subject) of the ServiceAccounts observed long enough with complete data, sorted."""
        found = []
        for username in sorted(self.subjects):
            if self.state(username, now, min_window_seconds) == "judged":
                namespace, name = _split(username)
                found.append((username, Subject(kind="ServiceAccount", namespace=namespace, name=name)))
        return found

    def judged(self, now: float, min_window_seconds: float) -> Iterator[tuple[Subject, SubjectUsage]]:
        """Like judged_names(), with a copy of each one's usage."""
        for username, subject in self.judged_names(now, min_window_seconds):
            yield subject, self.subjects[username].usage()

    def state_counts(self, now: float, min_window_seconds: float) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(SUBJECT_STATES, 0)
        for username in self.subjects:
            found = self.state(username, now, min_window_seconds)
            if found is not None:
                counts[found] += 1
        return counts

    def forget(self, keep: Callable[[str, str], bool], now: float, grace_seconds: float) -> int:
        """Drop subjects whose ServiceAccount `keep(namespace, name)` says is gone and that sent nothing for
        `grace_seconds` (a new ServiceAccount may send requests before the watch shows it). Returns how many."""
        gone = [
            username
            for username, observed in self.subjects.items()
            if now - observed.last_seen >= grace_seconds and not keep(*_split(username))
        ]
        for username in gone:
            del self.subjects[username]
        return len(gone)


def _split(username: str) -> tuple[str, str]:
    parsed = parse_service_account_user(username)
    assert parsed is not None
    return parsed


def record_all(counters: UsageCounters, requests: Iterable[AuditRequest], now: float) -> dict[str, int]:
    """Record several requests; counts per outcome."""
    outcomes: dict[str, int] = {"recorded": 0, "ignored": 0, "dropped": 0}
    for request in requests:
        outcomes[counters.add(request, now)] += 1
    return outcomes
