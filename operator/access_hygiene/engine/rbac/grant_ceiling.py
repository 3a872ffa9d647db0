"""The grant ceiling: what an AccessPolicy may grant, checked before anything is written.

Two independent checks. (1) Every requested (apiGroup, resource, verb, name) must be covered by the
ceiling ClusterRole's rules, the same ClusterRole the operator is bound to, so Kubernetes' own
escalation check agrees. (2) Sensitive capabilities are refused even inside the ceiling unless the
operator configuration lists them in allowed_sensitive.
Before both, names a person can get wrong are checked: an unknown verb ("gett"), and, given what the
API server serves (discovery, passed in), a resource it does not serve ("configmapz"), with a suggestion.
"""

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from access_hygiene.engine.rbac.capabilities import WEBHOOK_WRITE
from access_hygiene.models.policy import PolicyRule, ResolvedPolicy

READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

SENSITIVE_CAPABILITIES = frozenset(
    {
        "wildcard",
        "escalate",
        "bind",
        "impersonate",
        "secrets-read",
        "nodes-proxy",
        "token-create",
        "exec",
        "webhook-write",
        "rbac-write",
        "csr-approve",
        "cluster-rules",
    }
)
# The same admission resources the risk engine treats as webhook writes (AH-RBAC-011).
_WEBHOOK_RESOURCES = frozenset(WEBHOOK_WRITE[2])
_RBAC_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
# Verbs RBAC evaluates for resources: the API's request verbs and the ones special authorizer checks use
# (bind/escalate on roles, impersonate, approve/sign/attest on signers, use). Anything else never matches.
KNOWN_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
     "bind", "escalate", "impersonate", "approve", "sign", "attest", "use", "*"}
)  # fmt: skip
# apiGroup -> resource names the API server serves, subresources included ("pods/exec"); from discovery.
ServedResources = Mapping[str, Collection[str]]
# Violations that are typos (names Kubernetes never matches), not requests beyond the ceiling.
INVALID_INPUT = frozenset({"unknown-verb", "unknown-resource"})


@dataclass(frozen=True)
class CeilingViolation:
    scope: Literal["namespace", "cluster"]
    rule_index: int
    reason: str
    capability: str = ""


def _field(scope: str) -> str:
    return "rbac.rules" if scope == "namespace" else "rbac.clusterRules"


def sensitive_capabilities(rule: PolicyRule) -> list[tuple[str, str]]:
    """(capability, why) pairs a rule would grant."""
    groups, resources, verbs = set(rule.api_groups), set(rule.resources), set(rule.verbs)
    found: list[tuple[str, str]] = []
    wildcards = [
        name for name, values in (("apiGroups", groups), ("resources", resources), ("verbs", verbs)) if "*" in values
    ]
    if wildcards:
        found.append(("wildcard", f"'*' in {', '.join(wildcards)} grants everything current and future"))
    for verb in ("escalate", "bind", "impersonate"):
        if verb in verbs:
            found.append((verb, f"verb {verb} lets the app raise its own or others' privileges"))
    core = bool(groups & {"", "*"})

    def has(resource: str) -> bool:
        return resource in resources or "*" in resources

    if core and has("secrets") and verbs & (READ_VERBS | {"*"}):
        scope = "the named Secrets" if rule.resource_names else "every Secret in scope"
        found.append(("secrets-read", f"reading secrets exposes {scope}"))
    if core and has("nodes/proxy"):
        found.append(("nodes-proxy", "nodes/proxy reaches the kubelet API, bypassing admission and audit"))
    if core and has("serviceaccounts/token") and verbs & {"create", "*"}:
        found.append(("token-create", "serviceaccounts/token create mints tokens for other identities"))
    if core and (has("pods/exec") or has("pods/attach")) and verbs & {"create", "get", "*"}:
        found.append(("exec", "pods/exec or pods/attach runs commands inside other workloads"))
    writes = verbs & (WRITE_VERBS | {"*"})
    if (
        groups & {"admissionregistration.k8s.io", "*"}
        and writes
        and (resources & _WEBHOOK_RESOURCES or "*" in resources)
    ):
        found.append(("webhook-write", "writing admission webhooks/policies can intercept or disable admission"))
    if groups & {"rbac.authorization.k8s.io", "*"} and writes and (resources & _RBAC_RESOURCES or "*" in resources):
        found.append(("rbac-write", "writing roles or bindings can grant arbitrary permissions"))
    if groups & {"certificates.k8s.io", "*"} and (
        (has("certificatesigningrequests/approval") and writes) or (has("signers") and verbs & {"approve", "*"})
    ):
        found.append(("csr-approve", "approving CSRs can mint client certificates for any identity"))
    return found


def _covers(ceiling_values: Iterable[str], value: str) -> bool:
    values = set(ceiling_values)
    if "*" in values or value in values:
        return True
    # "*/scale" in a ceiling covers any resource's scale subresource.
    if "/" in value:
        return f"*/{value.split('/', 1)[1]}" in values
    return False


def _covered(ceiling: Sequence[Mapping[str, Any]], group: str, resource: str, verb: str, name: str) -> bool:
    for rule in ceiling:
        if rule.get("nonResourceURLs"):
            continue
        if not (
            _covers(rule.get("apiGroups") or [], group)
            and _covers(rule.get("resources") or [], resource)
            and _covers(rule.get("verbs") or [], verb)
        ):
            continue
        names = rule.get("resourceNames") or []
        if not names or (name and name in names):
            return True
    return False


def _suggestion(value: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(value, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def unknown_verbs(rule: PolicyRule) -> list[str]:
    """Reasons for verbs no authorizer evaluates, e.g. "unknown verb 'gett' (did you mean get?)"."""
    return [f"unknown verb '{verb}'{_suggestion(verb, KNOWN_VERBS - {'*'})}"
            for verb in dict.fromkeys(rule.verbs) if verb not in KNOWN_VERBS]  # fmt: skip


def unserved_resources(rule: PolicyRule, served: ServedResources) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, reason) for each requested resource the API server does not serve.

    Wildcards ("*", "*/scale") are not names and are left to the other checks.
    """
    found = []
    for group in dict.fromkeys(rule.api_groups):
        if group == "*":
            continue
        if group not in served:
            hint = _suggestion(group, served)
            for resource in rule.resources:
                found.append((group, resource, f"apiGroup '{group}' is not served by the API server{hint}"))
            continue
        for resource in dict.fromkeys(rule.resources):
            if "*" in resource or resource in served[group]:
                continue
            hint = _suggestion(resource, served[group])
            if not hint:
                elsewhere = sorted(g for g, names in served.items() if resource in names)
                if elsewhere:
                    hint = f" (it is served in apiGroup '{elsewhere[0]}')"
            where = f" in apiGroup '{group}'" if group else ""
            found.append((group, resource, f"resource '{resource}' is not served by the API server{where}{hint}"))
    return found


def requested_resources(policy: ResolvedPolicy) -> set[tuple[str, str]]:
    """(apiGroup, resource) pairs a policy names, wildcards left out: what discovery must know about."""
    rules = [*policy.spec.rbac.rules, *policy.spec.rbac.cluster_rules]
    return {(group, resource) for rule in rules for group in rule.api_groups for resource in rule.resources
            if group != "*" and "*" not in resource}  # fmt: skip


def uncovered_requests(
    rule: PolicyRule, ceiling: Sequence[Mapping[str, Any]], skip: Collection[tuple[str, str]] = ()
) -> list[str]:
    """What the rule asks for that the ceiling does not cover, leaving out the (apiGroup, resource) in skip
    and unknown verbs (both are reported on their own)."""
    names: list[str] = list(rule.resource_names) or [""]
    missing = []
    verbs = [verb for verb in rule.verbs if verb in KNOWN_VERBS]
    for group, resource, verb, name in product(rule.api_groups, rule.resources, verbs, names):
        if (group, resource) in skip:
            continue
        if not _covered(ceiling, group, resource, verb, name):
            where = f'apiGroup "{group}"' + (f", name {name}" if name else "")
            missing.append(f"{verb} {resource} ({where})")
    return missing


def check_grant_ceiling(
    policy: ResolvedPolicy,
    ceiling_rules: Sequence[Mapping[str, Any]],
    *,
    allowed_sensitive: frozenset[str] = frozenset(),
    allow_cluster_rules: bool = False,
    served: ServedResources | None = None,
) -> list[CeilingViolation]:
    """Everything that refuses the policy, one violation per reason. With `served` (API discovery),
    resources the API server does not serve are reported as such instead of as outside the ceiling."""
    violations: list[CeilingViolation] = []
    scoped: list[tuple[Literal["namespace", "cluster"], Sequence[PolicyRule]]] = [
        ("namespace", policy.spec.rbac.rules),
        ("cluster", policy.spec.rbac.cluster_rules),
    ]
    for scope, rules in scoped:
        for index, rule in enumerate(rules):
            where = f"{_field(scope)}[{index}]"
            if scope == "cluster" and not allow_cluster_rules:
                violations.append(
                    CeilingViolation(
                        scope,
                        index,
                        f"{where}: cluster-wide rules are not allowed by the operator (allowClusterRules is off)",
                        "cluster-rules",
                    )
                )
                continue
            for reason in unknown_verbs(rule):
                violations.append(CeilingViolation(scope, index, f"{where}: {reason}", "unknown-verb"))
            unserved = unserved_resources(rule, served) if served is not None else []
            for reason in dict.fromkeys(reason for _group, _resource, reason in unserved):
                violations.append(CeilingViolation(scope, index, f"{where}: {reason}", "unknown-resource"))
            for capability, why in sensitive_capabilities(rule):
                if capability not in allowed_sensitive:
                    violations.append(
                        CeilingViolation(
                            scope,
                            index,
                            f"{where}: refused, {why} (capability {capability} is not allowed by the operator)",
                            capability,
                        )
                    )
            missing = uncovered_requests(rule, ceiling_rules, skip={(g, r) for g, r, _ in unserved})
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                violations.append(
                    CeilingViolation(scope, index, f"{where}: outside the grant ceiling: {shown}", "outside-ceiling")
                )
    return violations


def refusal_reason(violations: Sequence[CeilingViolation]) -> str:
    """The Ready reason of a refused policy: InvalidSpec when it names a verb or resource Kubernetes never
    matches (a typo is invalid input, whatever else it asks for), GrantCeilingExceeded otherwise."""
    return "InvalidSpec" if any(v.capability in INVALID_INPUT for v in violations) else "GrantCeilingExceeded"
