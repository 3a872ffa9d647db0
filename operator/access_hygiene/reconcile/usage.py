"""What identities actually did, from audit events: usage aggregation, AccessPolicy suggestions, unused grants.

Pure and streaming: `UsageData.add()` takes one `AuditRequest` at a time and keeps, per identity, one
small record per distinct (verb, apiGroup, resource, subresource, namespace, path), so memory grows with
the number of distinct requests an app makes, not with the length of the log. Object names are kept per
record up to `name_cap` (beyond that the record only says "many names").

- `suggest()` turns one ServiceAccount's allowed requests into the rules of an AccessPolicy: verbs grouped
  per resource, subresources kept, `resourceNames` when the app touched at most `names_threshold` named
  objects with a verb that can be restricted by name and none of the names is generated or versioned
  (`generated_name_reason()`: such a rule is widened to the resource, with a note saying so), namespaced
  `rules` for its own namespace and
  `clusterRules` for cluster-scoped, all-namespace and other-namespace requests, non-resource URLs
  separately (an AccessPolicy cannot grant them). Denied requests are listed, never granted.
- `unused_grants()` is a subject's effective permissions (PermissionIndex) minus what the window shows used.
"""

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.models.findings import Subject
from access_hygiene.reconcile.auditlog import AuditRequest
from access_hygiene.reconcile.permissions import SA_USER_PREFIX, Binding, PermissionIndex, PolicyRule, UserInfo

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


# Names that change with every release, rollout or run: pinned as resourceNames, the next one is refused.
_HELM_RELEASE = re.compile(r"^sh\.helm\.release\.v1\..+\.v\d+$")  # Helm's storage driver: one per revision
# Kubernetes' "safe" alphabet (k8s.io/apimachinery/pkg/util/rand: no vowels, no 0, 1, 3): generateName's 5
# random characters, pod-template-hash and controller-revision-hash (up to 10), kustomize's name-hash suffix.
_GENERATED_SEGMENT = re.compile(r"^[bcdfghjklmnpqrstvwxz2456789]{5,10}$")
_DIGIT = re.compile(r"\d")
_TIMESTAMP_SUFFIX = re.compile(r"(-\d{8,}|\.[0-9a-f]{16})$")  # CronJob Jobs (scheduled minute), Events (UnixNano)
_VERSION_SUFFIX = re.compile(r"^(.*[-._])v\d+$")


def _generated_segment(segment: str, require_digit: bool = True) -> bool:
    return bool(_GENERATED_SEGMENT.match(segment)) and (not require_digit or bool(_DIGIT.search(segment)))


def generated_name_reason(name: str) -> str | None:
    """Why an object name is evidently generated or versioned (a new name next time), or None.

    A random suffix is recognised when it holds a digit (English words and abbreviations such as `https` do
    not), or when it follows a hash that does (a ReplicaSet's pod: `web-7d4b9c8f6d-bxkzq`)."""
    if _HELM_RELEASE.match(name):
        return "Helm release records get a new name with every release"
    if _TIMESTAMP_SUFFIX.search(name):
        return "names ending in a timestamp (a CronJob's Jobs, Events) are new every time"
    segments = name.split("-")
    if len(segments) >= 2 and (
        _generated_segment(segments[-1])
        or (len(segments) >= 3 and _generated_segment(segments[-2]) and _generated_segment(segments[-1], False))
    ):
        return "generated names (generateName, pod-template or revision hash) change with every rollout"
    return None


def _pinning_problem(names: set[str]) -> str | None:
    """Why these names must not become resourceNames (generated, or several versions of one name), or None."""
    generated = sorted(name for name in names if generated_name_reason(name))
    if generated:
        return f"[{_examples(generated)}]: {generated_name_reason(generated[0])}"
    versions: dict[str, list[str]] = {}
    for name in names:
        match = _VERSION_SUFFIX.match(name)
        if match:
            versions.setdefault(match.group(1), []).append(name)
    versioned = sorted(n for group in versions.values() if len(group) > 1 for n in group)
    if versioned:
        return f"[{_examples(versioned)}]: versioned names get a new name with every version"
    return None


def _examples(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


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


# --- suggest -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuggestedRule:
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    # Why the rule grants more than the names seen (generated or versioned names), for a comment on the rule.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def to_wire(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"apiGroups": [self.api_group], "resources": list(self.resources)}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        rule["verbs"] = list(self.verbs)
        return rule

    def requests(self) -> Iterator[tuple[str, str, str, str]]:
        """Every (verb, apiGroup, resource, name) the rule allows ("" name = any)."""
        for resource in self.resources:
            for verb in self.verbs:
                for name in self.resource_names or ("",):
                    yield verb, self.api_group, resource, name


@dataclass
class Suggestion:
    namespace: str
    service_account: str
    rules: list[SuggestedRule] = field(default_factory=list)
    cluster_rules: list[SuggestedRule] = field(default_factory=list)
    non_resource: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (path, verbs)
    denied: list[str] = field(default_factory=list)
    default_granted: list[str] = field(default_factory=list)
    other_namespaces: list[str] = field(default_factory=list)
    requests: int = 0
    first: float = math.inf
    last: float = -math.inf


def _url_matches(pattern: str, path: str) -> bool:
    return pattern == path or (pattern.endswith("*") and path.startswith(pattern[:-1]))


def _describe_key(key: UsageKey, record: KeyUsage) -> str:
    verb, group, resource, subresource, namespace, path = key
    if not resource:
        return f"{verb} {path} ({record.count}x, last {format_time(record.last)})"
    what = f"{resource}/{subresource}" if subresource else resource
    if group:
        what += f".{group}"
    if record.names and not record.unnamed:
        what += f" {','.join(sorted(record.names)[:5])}" + ("..." if len(record.names) > 5 else "")
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    return f"{verb} {what} {where} ({record.count}x, last {format_time(record.last)})"


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rules_for(
    buckets: dict[tuple[str, str], dict[str, KeyUsage]], names_threshold: int, where: str
) -> list[SuggestedRule]:
    named: list[SuggestedRule] = []
    # (group, verbs) -> resources, for rules without resourceNames (merged across resources with equal verbs)
    unnamed: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    notes: dict[tuple[str, str], str] = {}  # (group, resource) -> why its names were not pinned
    for (group, resource), verbs in sorted(buckets.items()):
        by_names: dict[tuple[str, ...], list[str]] = {}
        widened: list[str] = []
        problem = None
        for verb, record in verbs.items():
            restricted = (
                verb not in UNNAMED_VERBS
                and not record.unnamed
                and not record.overflow
                and 0 < len(record.names) <= names_threshold
            )
            if restricted and (found := _pinning_problem(record.names)):
                restricted, problem = False, found
                widened.append(verb)
            by_names.setdefault(tuple(sorted(record.names)) if restricted else (), []).append(verb)
        if problem:
            verbs_text = ", ".join(sorted(widened, key=verb_sort_key))
            notes[(group, resource)] = (
                f"{resource} ({verbs_text}): not restricted to resourceNames {problem}, so pinned names would "
                f"refuse the next one; granted on every {resource} object {where}"
            )
        for names, verb_list in sorted(by_names.items()):
            ordered = tuple(sorted(verb_list, key=verb_sort_key))
            if names:
                named.append(SuggestedRule(group, (resource,), ordered, names))
            else:
                unnamed.setdefault((group, ordered), []).append(resource)
    merged = [
        # A resource is in one rule without names only (all its unrestricted verbs): its note goes there.
        SuggestedRule(group, tuple(chunk), verbs, notes=tuple(notes[group, r] for r in chunk if (group, r) in notes))
        for (group, verbs), resources in unnamed.items()
        for chunk in _chunks(sorted(resources), MAX_RESOURCES_PER_RULE)
    ]
    return sorted(merged + named, key=lambda r: (r.api_group, r.resources, r.resource_names, r.verbs))


def suggest(usage: SubjectUsage, namespace: str, name: str, names_threshold: int = DEFAULT_NAMES_THRESHOLD,
            name_cap: int = DEFAULT_NAME_CAP) -> Suggestion:  # fmt: skip
    """The least rules that allow every allowed request of one ServiceAccount (see the module doc)."""
    suggestion = Suggestion(namespace, name, requests=usage.requests, first=usage.first, last=usage.last)
    scoped: dict[str, dict[tuple[str, str], dict[str, KeyUsage]]] = {"namespace": {}, "cluster": {}}
    urls: dict[str, set[str]] = {}
    others: set[str] = set()
    for key, record in sorted(usage.allowed.items()):
        verb, group, resource, subresource, key_namespace, path = key
        if not resource:
            if verb == "get" and any(_url_matches(p, path) for p in DEFAULT_GRANTED_URLS):
                suggestion.default_granted.append(_describe_key(key, record))
            else:
                urls.setdefault(path, set()).add(verb)
            continue
        if (verb, group, resource) in DEFAULT_GRANTED_RESOURCES:
            suggestion.default_granted.append(_describe_key(key, record))
            continue
        scope = "namespace" if key_namespace == namespace else "cluster"
        if key_namespace and key_namespace != namespace:
            others.add(key_namespace)
        combined = f"{resource}/{subresource}" if subresource else resource
        verbs = scoped[scope].setdefault((group, combined), {})
        if verb in verbs:
            verbs[verb].merge(record, name_cap)
        else:
            copy = KeyUsage()
            copy.merge(record, name_cap)
            verbs[verb] = copy
    suggestion.rules = _rules_for(scoped["namespace"], names_threshold, f"in namespace {namespace}")
    suggestion.cluster_rules = _rules_for(scoped["cluster"], names_threshold, "in every namespace (clusterRules)")
    suggestion.non_resource = [(path, tuple(sorted(verbs))) for path, verbs in sorted(urls.items())]
    suggestion.other_namespaces = sorted(others)
    suggestion.denied = [_describe_key(key, record) for key, record in _refused(usage)]
    return suggestion


def _refused(usage: SubjectUsage) -> Iterator[tuple[UsageKey, KeyUsage]]:
    """Denied requests that were never allowed: by key, and by object name within a key."""
    for key, record in sorted(usage.denied.items()):
        allowed = usage.allowed.get(key)
        if allowed is None or record.overflow:
            yield key, record
            continue
        if key[0] in UNNAMED_VERBS:  # a create is authorized before its name is read: names say nothing
            continue
        names = record.names - allowed.names
        if names or (record.unnamed and not allowed.unnamed):
            yield key, KeyUsage(record.count, names, record.unnamed and not allowed.unnamed, False, record.last)


def policy_name(service_account: str) -> str:
    """A DNS label for the AccessPolicy (and app) name; ServiceAccount names may be longer or dotted."""
    label = "".join(c if c.isalnum() or c == "-" else "-" for c in service_account.lower())[:63].strip("-")
    return label or "app"


def policy_manifest(suggestion: Suggestion, mode: str | None = None) -> dict[str, Any]:
    """The suggested AccessPolicy as a plain manifest (apiVersion accesshygiene.io/v1alpha1)."""
    rbac: dict[str, Any] = {"rules": [r.to_wire() for r in suggestion.rules]}
    if suggestion.cluster_rules:
        rbac["clusterRules"] = [r.to_wire() for r in suggestion.cluster_rules]
    spec: dict[str, Any] = {"serviceAccount": {"name": suggestion.service_account}, "rbac": rbac}
    if mode:
        spec["mode"] = mode
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "AccessPolicy",
        "metadata": {"name": policy_name(suggestion.service_account), "namespace": suggestion.namespace},
        "spec": spec,
    }


def non_resource_manifests(suggestion: Suggestion) -> list[dict[str, Any]]:
    """A ClusterRole + ClusterRoleBinding for the non-resource URLs (an AccessPolicy has no field for them)."""
    if not suggestion.non_resource:
        return []
    name = f"{suggestion.namespace}-{policy_name(suggestion.service_account)}-urls"[:253]
    rules = [{"nonResourceURLs": [path], "verbs": list(verbs)} for path, verbs in suggestion.non_resource]
    subject = {"kind": "ServiceAccount", "name": suggestion.service_account, "namespace": suggestion.namespace}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [subject]},
    ]  # fmt: skip


# --- unused ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnusedPermission:
    """One (apiGroup, resource) of a rule, or one non-resource URL, with the verbs never used."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    non_resource_url: str = ""

    def describe(self) -> str:
        verbs = ",".join(self.verbs)
        if self.non_resource_url:
            return f"{self.non_resource_url}: {verbs}"
        what = f"{self.resource}.{self.api_group}" if self.api_group else self.resource
        names = f" named {','.join(self.resource_names)}" if self.resource_names else ""
        return f"{what}{names}: {verbs}"

    def to_wire(self) -> dict[str, Any]:
        if self.non_resource_url:
            return {"nonResourceURL": self.non_resource_url, "verbs": list(self.verbs)}
        wire: dict[str, Any] = {"apiGroup": self.api_group, "resource": self.resource, "verbs": list(self.verbs)}
        if self.resource_names:
            wire["resourceNames"] = list(self.resource_names)
        return wire


@dataclass(frozen=True)
class UnusedGrants:
    """The permissions one binding gives one ServiceAccount that the window shows unused."""

    subject: Subject
    binding: Binding
    unused: tuple[UnusedPermission, ...]


def _resource_used(rule: PolicyRule, binding_namespace: str, verb: str, group: str, resource: str,
                   used: Iterable[tuple[UsageKey, KeyUsage]]) -> bool:  # fmt: skip
    probe = PolicyRule(verbs=frozenset({verb}), api_groups=frozenset({group}), resources=frozenset({resource}))
    for key, record in used:
        used_verb, used_group, used_resource, used_sub, used_namespace, _ = key
        if not used_resource or (binding_namespace and used_namespace != binding_namespace):
            continue
        if not probe.allows_any_name(used_verb, used_group, used_resource, used_sub):
            continue
        # A named grant is used only by requests on one of its names; when the names were not all kept
        # (overflow) it may have been, and an unused finding must never be a guess.
        if rule.resource_names and not (record.overflow or record.names & rule.resource_names):
            continue
        return True
    return False


def _url_used(verb: str, url: str, used: Iterable[tuple[UsageKey, KeyUsage]]) -> bool:
    probe = PolicyRule(verbs=frozenset({verb}), non_resource_urls=frozenset({url}))
    return any(not key[2] and probe.allows_url(key[0], key[5]) for key, _ in used)


def _binding_unused(binding: Binding, used: list[tuple[UsageKey, KeyUsage]]) -> list[UnusedPermission]:
    found: list[UnusedPermission] = []
    for rule in binding.rules:
        for url in sorted(rule.non_resource_urls):
            verbs = tuple(v for v in sorted(rule.verbs, key=verb_sort_key) if not _url_used(v, url, used))
            if verbs and not binding.namespace:  # URL rules only take effect through ClusterRoleBindings
                found.append(UnusedPermission("", "", verbs, non_resource_url=url))
        for group in sorted(rule.api_groups):
            for resource in sorted(rule.resources):
                verbs = tuple(
                    verb
                    for verb in sorted(rule.verbs, key=verb_sort_key)
                    if not _resource_used(rule, binding.namespace, verb, group, resource, used)
                )
                if verbs:
                    found.append(UnusedPermission(group, resource, verbs, tuple(sorted(rule.resource_names))))
    merged: dict[tuple[str, str, tuple[str, ...], str], set[str]] = {}
    for item in found:
        merged.setdefault((item.api_group, item.resource, item.resource_names, item.non_resource_url), set()).update(
            item.verbs
        )
    return [
        UnusedPermission(group, resource, tuple(sorted(verbs, key=verb_sort_key)), names, url)
        for (group, resource, names, url), verbs in sorted(merged.items())
    ]


def unused_grants(index: PermissionIndex, subject: Subject, usage: SubjectUsage) -> list[UnusedGrants]:
    """Per binding that applies to the subject (default bindings kube-apiserver maintains for everyone
    excluded), the permissions it grants that no allowed request of the window used."""
    used = list(usage.allowed.items())
    results: list[UnusedGrants] = []
    for _matched, binding in index.bindings_for(UserInfo.of(subject)):
        if binding.bootstrap or not binding.rules:
            continue
        unused = _binding_unused(binding, used)
        if unused:
            results.append(UnusedGrants(subject, binding, tuple(unused)))
    return sorted(results, key=lambda u: (u.binding.namespace, u.binding.ref.kind, u.binding.ref.name))
