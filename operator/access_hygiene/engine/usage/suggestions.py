"""AccessPolicy suggestions from usage.

`suggest()` turns one ServiceAccount's allowed requests into the rules of an AccessPolicy: verbs grouped per
resource, subresources kept, `resourceNames` when the app touched at most `names_threshold` named objects with a
verb that can be restricted by name and none of the names is generated or versioned (`generated_name_reason()`:
such a rule is widened to the resource, with a note saying so), namespaced `rules` for its own namespace and
`clusterRules` for cluster-scoped, all-namespace and other-namespace requests, non-resource URLs separately (an
AccessPolicy cannot grant them). Denied requests are listed, never granted.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.engine.usage.aggregation import (
    DEFAULT_GRANTED_RESOURCES,
    DEFAULT_GRANTED_URLS,
    DEFAULT_NAME_CAP,
    DEFAULT_NAMES_THRESHOLD,
    MAX_RESOURCES_PER_RULE,
    UNNAMED_VERBS,
    KeyUsage,
    SubjectUsage,
    UsageKey,
    format_time,
    verb_sort_key,
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
