"""Native admission policies in the live cluster: install (server-side apply) with the operator's current
parameters (clock, owner exemptions, grant ceiling, its own user name), re-apply when they change, prune what is
no longer rendered, and remove everything when admission is switched off."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene.engine.admission.cel import exemption_parameters
from access_hygiene.engine.admission.forms import compiled_forms
from access_hygiene.engine.admission.guards import automount_mutation, guard_policies
from access_hygiene.engine.audit.runner import load_rules
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.k8s import resources
from access_hygiene.render.admission import (
    ADMISSION_API_VERSION,
    RULE_LABEL,
    RULES_ANNOTATION,
    AdmissionConfig,
    OwnerRef,
    render_admission,
    selector,
)
from access_hygiene.settings import OperatorSettings

# Owner-capable kinds whose exemptions cover the objects they create (read for the owner-exemption parameters).
OWNER_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
)
# Bindings first, so no policy is ever left bound to a missing one (and nothing blocks while removing).
ADMISSION_KINDS = (
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "MutatingAdmissionPolicy",
)


@dataclass(frozen=True)
class AdmissionParameters:
    """What the operator feeds the policies besides its settings."""

    now: datetime
    owner_exemptions: dict[str, str]
    ceiling_rules: list[dict[str, Any]]
    # Who the operator is to the API server (SelfSubjectReview): the forms on roles do not judge its own writes.
    operator_username: str = ""


@dataclass(frozen=True)
class AdmissionResult:
    applied: int
    pruned: int
    rules: tuple[str, ...]


def admission_config(settings: OperatorSettings, owner: OwnerRef | None = None) -> AdmissionConfig:
    return AdmissionConfig(
        default_mode=settings.mode,
        exempt_namespaces=tuple(sorted(settings.all_exempt_namespaces)),
        exempt_namespace_selector=settings.exempt_selector_items,
        operator_namespace=settings.operator_namespace,
        owner=owner,
    )


def desired_admission(
    settings: OperatorSettings, parameters: AdmissionParameters, owner: OwnerRef | None = None
) -> list[dict[str, Any]]:
    """Every policy and binding for these settings and parameters."""
    catalogue = load_rules()

    def titles(rule_id: str) -> tuple[str, str]:
        rule = catalogue[rule_id]
        return rule.severity.value, rule.title

    ctx = settings.audit_context(now=parameters.now)
    forms = compiled_forms(
        titles,
        ctx.excluded_subject_prefixes,
        parameters.now,
        parameters.owner_exemptions,
        privileged_namespaces=sorted(ctx.privileged_namespaces),
        role_capabilities=settings.admission_role_capabilities,
        operator_username=parameters.operator_username,
    )
    guards = guard_policies(
        frozenset(settings.allowed_sensitive_capabilities),
        settings.allow_cluster_rules,
        settings.grant_ceiling_cluster_role,
        parameters.ceiling_rules,
    )
    return render_admission(forms, guards, [automount_mutation()], admission_config(settings, owner))


def owner_of(api: kubernetes.client.ApiClient, settings: OperatorSettings) -> OwnerRef | None:
    name = settings.admission_owner_cluster_role
    if not name:
        return None
    role = resources.get(api, "rbac.authorization.k8s.io/v1", "ClusterRole", name)
    if role is None:
        raise ValueError(f"admission owner ClusterRole {name} does not exist")
    uid = str((role.get("metadata") or {}).get("uid") or "")
    return OwnerRef("rbac.authorization.k8s.io/v1", "ClusterRole", name, uid)


def observe_parameters(
    api: kubernetes.client.ApiClient, settings: OperatorSettings, now: datetime
) -> AdmissionParameters:
    """The operator's clock, the active exemptions of owner objects, the grant ceiling's rules (none when the
    ClusterRole is missing: then no AccessPolicy fits, as the operator would refuse them all), and the operator's
    user name."""
    snapshot = ClusterSnapshot()
    for api_version, kind in OWNER_KINDS:
        for obj in resources.list_objects(api, api_version, kind):
            snapshot.add(obj)
    entries = exemption_parameters(snapshot, settings.audit_context(now=now))
    ceiling = resources.get(api, "rbac.authorization.k8s.io/v1", "ClusterRole", settings.grant_ceiling_cluster_role)
    rules = [r for r in (ceiling or {}).get("rules") or [] if isinstance(r, dict)]
    return AdmissionParameters(
        now=now, owner_exemptions=entries, ceiling_rules=rules, operator_username=own_username(api)
    )


def own_username(api: kubernetes.client.ApiClient) -> str:
    """The user name the API server sees for this client (SelfSubjectReview; every authenticated user may ask)."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = resources.request(api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review)
    username = ((answer.get("status") or {}).get("userInfo") or {}).get("username")
    if not username:
        raise ValueError("SelfSubjectReview returned no user name")
    return str(username)


def _live_admission_objects(api: kubernetes.client.ApiClient, label_selector: str) -> list[tuple[str, str]]:
    found = []
    for kind in ADMISSION_KINDS:
        for obj in resources.list_objects(api, ADMISSION_API_VERSION, kind, label_selector=label_selector):
            found.append((kind, str(obj["metadata"]["name"])))
    return found


def apply_admission(api: kubernetes.client.ApiClient, settings: OperatorSettings, now: datetime) -> AdmissionResult:
    """Apply every policy and binding with current parameters (server-side apply: unchanged ones are no-ops;
    policies go before their bindings); prune labelled objects no longer rendered."""
    owner = owner_of(api, settings)
    desired = desired_admission(settings, observe_parameters(api, settings, now), owner)
    for manifest in desired:
        resources.apply(api, manifest)
    wanted = {(str(m["kind"]), str(m["metadata"]["name"])) for m in desired}
    stale = [item for item in _live_admission_objects(api, selector(admission_config(settings))) if item not in wanted]
    for kind, name in stale:
        resources.delete(api, ADMISSION_API_VERSION, kind, name)
    rules = tuple(sorted(rule_ids(desired)))
    return AdmissionResult(applied=len(desired), pruned=len(stale), rules=rules)


def rule_ids(manifests: list[dict[str, Any]]) -> set[str]:
    """The rule ids the rendered policies judge (a rule policy's label, a profile policy's annotation)."""
    found = set()
    for manifest in manifests:
        metadata = manifest["metadata"]
        found.add(str(metadata["labels"].get(RULE_LABEL, "")))
        found.update(str((metadata.get("annotations") or {}).get(RULES_ANNOTATION, "")).split(","))
    return found - {""}


def may_manage_admission(api: kubernetes.client.ApiClient) -> bool:
    """Does the operator's identity hold list+delete on admission policy bindings (SelfSubjectAccessReview)?"""
    for verb in ("list", "delete"):
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "group": "admissionregistration.k8s.io",
                    "resource": "validatingadmissionpolicybindings",
                    "verb": verb,
                }
            },
        }
        answer = resources.request(api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
        if not (answer.get("status") or {}).get("allowed"):
            return False
    return True


def delete_admission(api: kubernetes.client.ApiClient, settings: OperatorSettings) -> int:
    """Remove every admission object the operator rendered (bindings first).

    Without permission to manage them (the chart grants it only with admission on) nothing is requested:
    with the chart, turning admission off deletes the owner ClusterRole and the garbage collector removes
    what it owned. Returns how many objects were deleted."""
    if not may_manage_admission(api):
        return 0
    live = _live_admission_objects(api, selector(admission_config(settings)))
    return sum(resources.delete(api, ADMISSION_API_VERSION, kind, name) for kind, name in live)
