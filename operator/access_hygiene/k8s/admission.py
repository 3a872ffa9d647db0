"""Native admission policies in the live cluster: install (server-side apply) with the operator's current
parameters (the floor of admission's "now", owner exemptions with their untils, grant ceiling, its own user name),
re-apply only the objects whose content changed, prune what is no longer rendered, and remove everything when
admission is switched off."""

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene.engine.admission.cel import exemption_parameters, parameter_floor, stamp
from access_hygiene.engine.admission.forms import compiled_forms
from access_hygiene.engine.admission.guards import automount_mutation, guard_policies
from access_hygiene.engine.audit.runner import load_rules
from access_hygiene.engine.ground.exemptions import Exemption, exemptions_in
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.k8s import resources
from access_hygiene.render.access_admission import render_access_admission
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
# On every rule policy: the floor of "now" it carries (docs/admission.md, "How time is judged").
FLOOR_ANNOTATION = "accesshygiene.io/parameters-floor"
Obj = dict[str, Any]
WRITERS = 4  # concurrent admission writes (the operator's client pool has workers + 8 connections)


@dataclass(frozen=True)
class AdmissionParameters:
    """What the operator feeds the policies besides its settings: no clock (floor moves only when an exemption
    expiry passes)."""

    floor: datetime
    owner_exemptions: dict[str, list[dict[str, str]]]
    ceiling_rules: list[dict[str, Any]]
    # Who the operator is to the API server (SelfSubjectReview): the forms on roles do not judge its own writes.
    operator_username: str = ""


@dataclass(frozen=True)
class AdmissionResult:
    applied: int  # objects written (their content differed from what was last applied)
    pruned: int
    rules: tuple[str, ...]
    written: dict[str, int] = field(default_factory=dict)  # objects written by kind


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

    ctx = settings.audit_context(now=parameters.floor)
    forms = compiled_forms(
        titles,
        ctx.excluded_subject_prefixes,
        parameters.floor,
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
    manifests = render_admission(forms, guards, [automount_mutation()], admission_config(settings, owner))
    for manifest in manifests:
        if any(v["name"] == "floor" for v in manifest["spec"].get("variables") or []):
            annotations = manifest["metadata"].setdefault("annotations", {})
            annotations[FLOOR_ANNOTATION] = stamp(parameters.floor)
    return manifests


def owner_of(api: kubernetes.client.ApiClient, settings: OperatorSettings) -> OwnerRef | None:
    name = settings.admission_owner_cluster_role
    if not name:
        return None
    role = resources.get(api, "rbac.authorization.k8s.io/v1", "ClusterRole", name)
    if role is None:
        raise ValueError(f"admission owner ClusterRole {name} does not exist")
    uid = str((role.get("metadata") or {}).get("uid") or "")
    return OwnerRef("rbac.authorization.k8s.io/v1", "ClusterRole", name, uid)


def parameters_of(
    owners: Iterable[Obj],
    ceiling: Obj | None,
    settings: OperatorSettings,
    now: datetime,
    untils: Iterable[datetime],
    operator_username: str,
) -> AdmissionParameters:
    """The parameters from objects the operator already holds: the owner-kind objects (for the owner
    exemptions), the grant-ceiling ClusterRole (none: no rules, then no AccessPolicy fits, as the operator would
    refuse them all), every exemption expiry it knows (for the floor) and its user name."""
    snapshot = ClusterSnapshot()
    for obj in owners:
        snapshot.add(obj)
    entries = exemption_parameters(snapshot, settings.audit_context(now=now))
    rules = [r for r in (ceiling or {}).get("rules") or [] if isinstance(r, dict)]
    return AdmissionParameters(
        floor=parameter_floor(untils, now),
        owner_exemptions=entries,
        ceiling_rules=rules,
        operator_username=operator_username,
    )


def observe_parameters(
    api: kubernetes.client.ApiClient, settings: OperatorSettings, now: datetime
) -> AdmissionParameters:
    """The parameters read from the API (LISTs: for tests and tools; the operator takes them from its watch cache)."""
    snapshot = ClusterSnapshot()
    for api_version, kind in (*OWNER_KINDS, ("v1", "Namespace")):
        for obj in resources.list_objects(api, api_version, kind):
            snapshot.add(obj)
    untils = [e.until for e in exemptions_in(snapshot) if isinstance(e, Exemption)]
    ceiling = resources.get(api, "rbac.authorization.k8s.io/v1", "ClusterRole", settings.grant_ceiling_cluster_role)
    owners = list(snapshot.workloads)
    return parameters_of(owners, ceiling, settings, now, untils, own_username(api))


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


@dataclass
class AdmissionWriter:
    """Applies admission objects, skipping those whose content is what it last applied (server-side apply of
    identical content is still a request). Keeps the last-applied content in memory: a fresh writer (a restart)
    applies everything once."""

    applied: dict[tuple[str, str], Obj] = field(default_factory=dict)
    writes: int = 0

    def write(
        self, api: kubernetes.client.ApiClient, settings: OperatorSettings, desired: list[Obj], prune: bool
    ) -> "AdmissionResult":
        written: Counter[str] = Counter()
        changed = [m for m in desired if self.applied.get((str(m["kind"]), str(m["metadata"]["name"]))) != m]
        # Policies before bindings (no binding is ever left pointing at a missing policy); within each group the
        # writes run side by side: a floor move rewrites 14 policies, and the API server compiles each one.
        policies = [m for m in changed if not str(m["kind"]).endswith("Binding")]
        bindings = [m for m in changed if str(m["kind"]).endswith("Binding")]
        for group in (policies, bindings):
            with ThreadPoolExecutor(max_workers=WRITERS) as pool:
                for manifest, _ in zip(group, pool.map(lambda m: resources.apply(api, m), group), strict=True):
                    self.applied[(str(manifest["kind"]), str(manifest["metadata"]["name"]))] = manifest
                    written[str(manifest["kind"])] += 1
        self.writes += written.total()
        wanted = {(str(m["kind"]), str(m["metadata"]["name"])) for m in desired}
        live = _live_admission_objects(api, selector(admission_config(settings))) if prune else list(self.applied)
        stale = [item for item in live if item not in wanted]
        for kind, name in stale:
            resources.delete(api, ADMISSION_API_VERSION, kind, name)
            self.applied.pop((kind, name), None)
        rules = tuple(sorted(rule_ids(desired)))
        return AdmissionResult(applied=written.total(), pruned=len(stale), rules=rules, written=dict(written))


def apply_admission(
    api: kubernetes.client.ApiClient,
    settings: OperatorSettings,
    now: datetime,
    writer: AdmissionWriter | None = None,
) -> AdmissionResult:
    """Apply every policy and binding with the parameters read from the API (policies go before their bindings;
    with a writer, only those that changed since it last applied them); prune labelled objects no longer
    rendered."""
    owner = owner_of(api, settings)
    desired = desired_admission(settings, observe_parameters(api, settings, now), owner)
    return (writer or AdmissionWriter()).write(api, settings, desired, prune=True)


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


def may_apply_access_admission(api: kubernetes.client.ApiClient) -> bool:
    """May the operator write admission policies and bindings (SelfSubjectAccessReview)? The chart renders the
    just-in-time access policies itself and grants this only with hygiene admission on."""
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        for verb in ("create", "patch"):
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {"group": "admissionregistration.k8s.io", "resource": resource, "verb": verb}
                },
            }
            path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            if not (resources.request(api, "POST", path, body=review).get("status") or {}).get("allowed"):
                return False
    return True


def apply_access_admission(api: kubernetes.client.ApiClient) -> int:
    """Apply the just-in-time access policies (always on, whatever the hygiene admission mode; policies before
    their bindings) when the operator may; returns how many objects were applied (0: not permitted, the chart
    installs them)."""
    if not may_apply_access_admission(api):
        return 0
    manifests = render_access_admission(own_username(api))
    ordered = [m for m in manifests if not str(m["kind"]).endswith("Binding")]
    ordered += [m for m in manifests if str(m["kind"]).endswith("Binding")]
    for manifest in ordered:
        resources.apply(api, manifest)
    return len(ordered)
