"""What an eligibility's role would grant, judged before anything is bound.

The role must fit the grant ceiling (the ClusterRole the operator holds, so Kubernetes' own escalation check
agrees) and carry no sensitive capability the operator does not allow: the same two checks an AccessPolicy
passes (engine/rbac/grant_ceiling.py). Self-approval is honoured only for a low-risk role: read verbs only,
no wildcard, no sensitive capability at all.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from access_hygiene.engine.rbac.grant_ceiling import (
    READ_VERBS,
    sensitive_capabilities,
    uncovered_requests,
    unknown_verbs,
)
from access_hygiene.models.policy import PolicyRule

_SHOWN = 5


def _as_policy_rule(rule: Mapping[str, Any]) -> PolicyRule:
    # Rules come from live Roles the API server validated already; construct without re-validating.
    return PolicyRule.model_construct(
        api_groups=list(rule.get("apiGroups") or []),
        resources=list(rule.get("resources") or []),
        resource_names=list(rule.get("resourceNames") or []),
        verbs=list(rule.get("verbs") or []),
    )


def resource_rules(rules: Sequence[Mapping[str, Any]]) -> list[PolicyRule]:
    """The rules a RoleBinding can confer: resource rules (nonResourceURLs bind only cluster-wide)."""
    return [_as_policy_rule(rule) for rule in rules if rule.get("resources") and not rule.get("nonResourceURLs")]


def _shown(items: Sequence[str]) -> str:
    return "; ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def ceiling_refusals(
    rules: Sequence[Mapping[str, Any]],
    ceiling_rules: Sequence[Mapping[str, Any]],
    allowed_sensitive: frozenset[str] = frozenset(),
) -> list[str]:
    """Why the role may not be granted, one reason per rule and cause; empty when it may."""
    refusals: list[str] = []
    for index, rule in enumerate(resource_rules(rules)):
        where = f"rules[{index}]"
        refusals.extend(f"{where}: {reason}" for reason in unknown_verbs(rule))
        for capability, why in sensitive_capabilities(rule):
            if capability not in allowed_sensitive:
                refusals.append(f"{where}: {why} (capability {capability} is not allowed by the operator)")
        missing = uncovered_requests(rule, ceiling_rules)
        if missing:
            shown = ", ".join(missing[:_SHOWN]) + (
                f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
            )
            refusals.append(f"{where}: outside the grant ceiling: {shown}")
    return refusals


def self_approval_refusals(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the role is not low-risk enough for self-approval; empty when it is (read-only, no wildcard, no
    sensitive capability). The test admission precomputes too (see /work/notes/jit-contract.md)."""
    refusals: list[str] = []
    for index, rule in enumerate(resource_rules(rules)):
        writes = sorted(set(rule.verbs) - READ_VERBS)
        if writes:
            refusals.append(f"rules[{index}] grants {', '.join(writes)} (only get, list, watch are low-risk)")
        refusals.extend(f"rules[{index}]: {why}" for _capability, why in sensitive_capabilities(rule))
    return refusals


def describe_refusals(refusals: Sequence[str]) -> str:
    return _shown(list(refusals))
