"""Continuous mode, pure part: from observed usage and the RBAC state to `status.unusedRules` and metric values.

- `rbac_snapshot()` keeps only what judging a few ServiceAccounts needs (every Role and ClusterRole, and the
  bindings that name one of them or one of their groups), so a PermissionIndex over it is cheap however many
  bindings the cluster has.
- `unused_rules()` turns `unused_grants()` results into the small status objects, bounded.
- `unused_rules_patch()` is the status merge patch, or None when the status already says it (no-op = no write).
"""

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj
from access_hygiene.engine.rbac.permissions import PermissionIndex, UserInfo
from access_hygiene.engine.usage.aggregation import SubjectUsage
from access_hygiene.engine.usage.unused import UnusedGrants, unused_grants
from access_hygiene.models.findings import Subject
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.models.status import MAX_UNUSED_RULES, RbacRef, UnusedRule

UNUSED_RULES_FIELD = "unusedRules"


def _binding_names_one_of(binding: Obj, namespace: str, keys: set[tuple[str, str, str]]) -> bool:
    for raw in binding.get("subjects") or []:
        if not isinstance(raw, dict):
            continue
        kind, name = str(raw.get("kind", "")), str(raw.get("name", ""))
        subject_namespace = str(raw.get("namespace") or namespace) if kind == "ServiceAccount" else ""
        if (kind, subject_namespace, name) in keys:
            return True
    return False


def rbac_snapshot(
    subjects: Iterable[Subject],
    roles: Iterable[Obj],
    cluster_roles: Iterable[Obj],
    role_bindings: Iterable[Obj],
    cluster_role_bindings: Iterable[Obj],
) -> ClusterSnapshot:
    """The RBAC objects that can grant anything to `subjects` (ServiceAccounts): enough for their
    PermissionIndex.bindings_for(), and nothing else."""
    keys = {key for subject in subjects for key in UserInfo.of(subject).subject_keys()}
    return ClusterSnapshot(
        roles=list(roles),
        cluster_roles=list(cluster_roles),
        role_bindings=[
            b for b in role_bindings if _binding_names_one_of(b, str((b.get("metadata") or {}).get("namespace")), keys)
        ],
        cluster_role_bindings=[b for b in cluster_role_bindings if _binding_names_one_of(b, "", keys)],
    )


def unused_rules(grants: Sequence[UnusedGrants], limit: int = MAX_UNUSED_RULES) -> list[UnusedRule]:
    """Per binding, the unused permissions with equal verbs (and names) merged into one entry listing their
    resources, like the RBAC rules they came from; sorted, at most `limit` entries."""
    rules: list[UnusedRule] = []
    for item in grants:
        binding = RbacRef(kind=item.binding.ref.kind, name=item.binding.ref.name, namespace=item.binding.namespace)
        role = RbacRef(
            kind=item.binding.role_ref.kind, name=item.binding.role_ref.name, namespace=item.binding.role_ref.namespace
        )
        merged: dict[tuple[str, tuple[str, ...], tuple[str, ...], str], list[str]] = {}
        for permission in item.unused:
            key = (permission.api_group, permission.verbs, permission.resource_names, permission.non_resource_url)
            resources = merged.setdefault(key, [])
            if permission.resource:
                resources.append(permission.resource)
        for (group, verbs, names, url), resources in sorted(merged.items()):
            rules.append(
                UnusedRule(
                    verbs=list(verbs),
                    api_group=group,
                    resources=sorted(resources),
                    resource_names=list(names),
                    non_resource_url=url,
                    binding=binding,
                    role=role,
                )
            )
            if len(rules) >= limit:
                return rules
    return rules


def grants_key(index: PermissionIndex, subject: Subject) -> Hashable:
    """What a subject's judgement reads of RBAC: the bindings that apply to it with their resolved rules. Equal
    keys (and equal usage) give equal results, so an unchanged subject is not judged again."""
    return tuple(
        (binding.ref, binding.role_ref, binding.rules, binding.bootstrap) for _, binding in index.bindings_for(subject)
    )


@dataclass(frozen=True)
class SubjectJudgement:
    """One ServiceAccount's judgement, kept between passes: its inputs (usage version, grants key) and results
    (the metric's count; the status entries only for ServiceAccounts an AccessPolicy manages)."""

    version: int
    grants: Hashable
    unused_count: int
    rules: tuple[UnusedRule, ...] | None


def judge_subject(
    index: PermissionIndex, subject: Subject, usage: SubjectUsage, version: int, key: Hashable, with_rules: bool
) -> SubjectJudgement:
    """Judge one subject; `key` is its grants_key() and `version` the usage version the copy was taken at."""
    grants = unused_grants(index, subject, usage)
    rules = tuple(unused_rules(grants)) if with_rules else None
    return SubjectJudgement(version, key, unused_permission_count(grants), rules)


def still_valid(previous: SubjectJudgement | None, version: int, key: Hashable, with_rules: bool) -> bool:
    """Whether an earlier judgement answers for the same inputs (and has status entries when they are needed)."""
    return (
        previous is not None
        and previous.version == version
        and previous.grants == key
        and (previous.rules is not None or not with_rules)
    )


def unused_permission_count(grants: Iterable[UnusedGrants]) -> int:
    """Unused (verb, resource-or-URL) pairs over every binding: the metric's value."""
    return sum(len(permission.verbs) for item in grants for permission in item.unused)


def unused_rules_wire(rules: Sequence[UnusedRule] | None) -> list[dict[str, Any]] | None:
    return None if rules is None else [rule.model_dump(by_alias=True, mode="json") for rule in rules]


def unused_rules_patch(
    current_status: Mapping[str, Any] | None, desired: Sequence[UnusedRule] | None
) -> dict[str, Any] | None:
    """The status merge patch that makes status.unusedRules say `desired` (None removes the field), or None
    when it already does."""
    wire = unused_rules_wire(desired)
    if (current_status or {}).get(UNUSED_RULES_FIELD) == wire:
        return None
    return {"status": {UNUSED_RULES_FIELD: wire}}


def policy_service_account(policy: Mapping[str, Any]) -> str | None:
    """The ServiceAccount name an AccessPolicy manages; None when its spec is invalid or it is being deleted."""
    metadata = dict(policy.get("metadata") or {})
    if metadata.get("deletionTimestamp") or not metadata.get("name"):
        return None
    try:
        spec = AccessPolicySpec.model_validate(policy.get("spec") or {})
    except ValidationError:
        return None
    return resolve_policy(metadata, spec).service_account_name
