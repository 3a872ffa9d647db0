"""Unused grants: what a ServiceAccount's bindings grant that its usage never exercised.

`unused_grants()` is a subject's effective permissions (PermissionIndex) minus what the window shows used.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from access_hygiene.engine.rbac.permissions import Binding, PermissionIndex, PolicyRule, UserInfo
from access_hygiene.engine.usage.aggregation import KeyUsage, SubjectUsage, UsageKey, verb_sort_key
from access_hygiene.models.findings import Subject


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
