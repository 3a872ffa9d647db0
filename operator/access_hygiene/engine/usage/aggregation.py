"""What identities actually did, from audit events: usage aggregated per identity.

Pure and streaming: `UsageData.add()` takes one `AuditRequest` at a time and keeps, per identity, one
small record per distinct (verb, apiGroup, resource, subresource, namespace, path), so memory grows with
the number of distinct requests an app makes, not with the length of the log. Object names are kept per
record up to `name_cap` (beyond that the record only says "many names").
suggestions.py (AccessPolicy suggestions) and unused.py (unused grants) judge it.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from access_hygiene.engine.rbac.permissions import SA_USER_PREFIX
from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.models.findings import Subject

# (verb, apiGroup, resource, subresource, namespace, non-resource path)
UsageKey = tuple[str, str, str, str, str, str]

DEFAULT_NAME_CAP = 64
DEFAULT_NAMES_THRESHOLD = 5
DEFAULT_MIN_WINDOW_SECONDS = 7 * 86400
# RBAC cannot restrict these by name: the authorizer sees no name for create, none for deletecollection.
UNNAMED_VERBS = frozenset({"create", "deletecollection"})
# The AccessPolicy schema's limits (models/policy.py).
MAX_RULES, MAX_CLUSTER_RULES, MAX_RESOURCES_PER_RULE, MAX_RESOURCE_NAMES = 64, 32, 32, 64
VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Granted to every authenticated identity by kube-apiserver's default roles (system:discovery,
# system:public-info-viewer, system:basic-user): never worth a rule of an app's own.
DEFAULT_GRANTED_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/",
                        "/healthz", "/livez", "/readyz")  # fmt: skip
DEFAULT_GRANTED_RESOURCES = frozenset(
    {
        ("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
        ("create", "authorization.k8s.io", "selfsubjectrulesreviews"),
        ("create", "authentication.k8s.io", "selfsubjectreviews"),
    }
)


def verb_sort_key(verb: str) -> tuple[int, str]:
    return (VERB_ORDER.index(verb) if verb in VERB_ORDER else len(VERB_ORDER), verb)


def format_time(stamp: float) -> str:
    if not math.isfinite(stamp):
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(slots=True)
class KeyUsage:
    """How one distinct request was made: how often, on which named objects, when last."""

    count: int = 0
    names: set[str] = field(default_factory=set)
    unnamed: bool = False  # at least one request carried no object name (list, create, ...)
    overflow: bool = False  # more than name_cap distinct names: `names` is no longer complete
    last: float = -math.inf

    def add(self, name: str, stamp: float, counted: bool, name_cap: int) -> None:
        if counted:
            self.count += 1
        self.last = max(self.last, stamp)
        if not name:
            self.unnamed = True
        elif not self.overflow and name not in self.names:
            if len(self.names) >= name_cap:
                self.overflow, self.names = True, set()
            else:
                self.names.add(name)

    def merge(self, other: "KeyUsage", name_cap: int) -> None:
        self.count += other.count
        self.last = max(self.last, other.last)
        self.unnamed |= other.unnamed
        if other.overflow or self.overflow or len(self.names | other.names) > name_cap:
            self.overflow, self.names = True, set()
        else:
            self.names |= other.names


@dataclass(slots=True)
class SubjectUsage:
    allowed: dict[UsageKey, KeyUsage] = field(default_factory=dict)
    denied: dict[UsageKey, KeyUsage] = field(default_factory=dict)
    requests: int = 0
    first: float = math.inf
    last: float = -math.inf


@dataclass
class UsageData:
    """Usage per identity (user name) over a time window. Feed it with add(); nothing else is stored."""

    since: float = -math.inf
    until: float = math.inf
    name_cap: int = DEFAULT_NAME_CAP
    # Which identities to keep (by user name); None keeps every one.
    wanted: Callable[[str], bool] | None = None
    min_window_seconds: float = DEFAULT_MIN_WINDOW_SECONDS
    subjects: dict[str, SubjectUsage] = field(default_factory=dict)
    first: float = math.inf  # earliest / latest request of any identity inside [since, until]
    last: float = -math.inf
    requests: int = 0  # requests inside the window (every identity)
    outside_window: int = 0

    def add(self, request: AuditRequest) -> None:
        stamp = request.timestamp
        if stamp < self.since or stamp > self.until:
            self.outside_window += 1
            return
        self.first = min(self.first, stamp)
        self.last = max(self.last, stamp)
        if request.counted:
            self.requests += 1
        if self.wanted is not None and not self.wanted(request.username):
            return
        usage = self.subjects.get(request.username)
        if usage is None:
            usage = self.subjects[request.username] = SubjectUsage()
        if request.counted:
            usage.requests += 1
        usage.first = min(usage.first, stamp)
        usage.last = max(usage.last, stamp)
        key = (request.verb, request.api_group, request.resource, request.subresource, request.namespace,
               request.path)  # fmt: skip
        table = usage.allowed if request.allowed else usage.denied
        record = table.get(key)
        if record is None:
            record = table[key] = KeyUsage()
        record.add(request.name, stamp, request.counted, self.name_cap)

    @property
    def window_seconds(self) -> float:
        return self.last - self.first if self.requests else 0.0

    @property
    def judgeable(self) -> bool:
        """The data spans at least min_window_seconds: long enough to call a grant unused."""
        return self.requests > 0 and self.window_seconds >= self.min_window_seconds

    def describe_window(self) -> str:
        if not self.requests:
            return "no requests in the window"
        return f"{format_duration(self.window_seconds)} ({format_time(self.first)} to {format_time(self.last)})"

    def service_accounts(self) -> Iterator[tuple[Subject, SubjectUsage]]:
        """ServiceAccounts with activity in the window, sorted."""
        for username in sorted(self.subjects):
            if not username.startswith(SA_USER_PREFIX):
                continue
            namespace, _, name = username[len(SA_USER_PREFIX) :].partition(":")
            usage = self.subjects[username]
            if namespace and name and (usage.allowed or usage.denied):
                yield Subject(kind="ServiceAccount", namespace=namespace, name=name), usage


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_USER_PREFIX}{namespace}:{name}"
