"""Native admission policies in the live cluster: install (server-side apply) the parameter object (the floor of
admission's "now", owner exemptions with their untils, the grant ceiling) and the policies and bindings (which
also carry the operator's user name), re-apply only the objects whose content changed, prune what is no longer
rendered, and remove everything when admission is switched off."""

import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kubernetes

from access_hygiene.engine.admission.cel import exemption_parameters, parameter_floor, stamp
from access_hygiene.engine.admission.forms import compiled_forms
from access_hygiene.engine.admission.guards import automount_mutation, ceiling_parameter, guard_policies
from access_hygiene.engine.audit.runner import load_rules
from access_hygiene.engine.ground.exemptions import Exemption, exemptions_in
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.k8s import resources
from access_hygiene.render.access_admission import creator_stamp_policy, render_access_admission
from access_hygiene.render.admission import (
    ADMISSION_API_VERSION,
    RULE_LABEL,
    RULES_ANNOTATION,
    AdmissionConfig,
    OwnerRef,
    render_admission,
    render_parameter_object,
    selector,
)
from access_hygiene.render.admission_parameters import (
    PARAMETERS_API_VERSION,
    PARAMETERS_CRD_NAME,
    PARAMETERS_KIND,
    PARAMETERS_NAME,
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
# kube-apiserver resolves a policy's paramKind through a discovery cache it resets every 30 s
# (k8s.io/apiserver pkg/server/options/admission.go); until then a policy naming a kind that is newer than the
# last reset is misconfigured, and failurePolicy Fail refuses everything it matches. Policies that read the
# parameter object are written only once the CRD has been Established this long.
PARAMETERS_DISCOVERY_SECONDS = 32.0
# kube-apiserver reloads admission policies and bindings on a 1 s tick (policyRefreshIntervalDefault); twice that.
POLICY_RELOAD_SECONDS = 2.0  # the 30 s reset, the condition's whole-second rounding, a second of margin
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
    # > 0: the policies and bindings were held back this long (the parameter kind is too new: parameters_known_in)
    deferred_seconds: float = 0.0


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
        privileged_namespaces=sorted(ctx.privileged_namespaces),
        role_capabilities=settings.admission_role_capabilities,
        operator_username=parameters.operator_username,
    )
    guards = guard_policies(
        frozenset(settings.allowed_sensitive_capabilities),
        settings.allow_cluster_rules,
        settings.grant_ceiling_cluster_role,
    )
    config = admission_config(settings, owner)
    parameter_object = render_parameter_object(
        stamp(parameters.floor), parameters.owner_exemptions, ceiling_parameter(parameters.ceiling_rules), config
    )
    return [parameter_object, *render_admission(forms, guards, [automount_mutation()], config)]


def parameters_known_in(api: kubernetes.client.ApiClient, now: datetime) -> float:
    """Seconds until every kube-apiserver resolves the parameter kind at admission (0: now); see
    PARAMETERS_DISCOVERY_SECONDS. Raises when the CRD is not installed (the chart and `access-hygiene local`
    install it)."""
    crd = resources.get(api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", PARAMETERS_CRD_NAME)
    if crd is None:
        raise ValueError(f"CustomResourceDefinition {PARAMETERS_CRD_NAME} is not installed")
    conditions = (crd.get("status") or {}).get("conditions") or []
    established = next((c for c in conditions if c.get("type") == "Established" and c.get("status") == "True"), None)
    if established is None or not established.get("lastTransitionTime"):
        return PARAMETERS_DISCOVERY_SECONDS
    since = datetime.fromisoformat(str(established["lastTransitionTime"]).replace("Z", "+00:00"))
    ready_at = since + timedelta(seconds=PARAMETERS_DISCOVERY_SECONDS)
    return max(0.0, (ready_at - now).total_seconds())


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
    parameters_known: bool = False  # kube-apiserver resolves the parameter kind (parameters_known_in)

    def write(
        self,
        api: kubernetes.client.ApiClient,
        settings: OperatorSettings,
        desired: list[Obj],
        prune: bool,
        now: datetime,
    ) -> "AdmissionResult":
        written: Counter[str] = Counter()
        changed = [m for m in desired if self.applied.get((str(m["kind"]), str(m["metadata"]["name"]))) != m]
        # The parameter object, then policies, then bindings (no binding is ever left pointing at a missing policy
        # or parameter object); within each group the writes run side by side (the API server compiles each
        # policy). A parameter change is one write: the policies read the object at each request.
        parameters = [m for m in changed if m["kind"] == PARAMETERS_KIND]
        policies = [m for m in changed if not str(m["kind"]).endswith("Binding") and m["kind"] != PARAMETERS_KIND]
        bindings = [m for m in changed if str(m["kind"]).endswith("Binding")]
        deferred = 0.0
        if not self.parameters_known and (policies or bindings):
            deferred = parameters_known_in(api, now)
            self.parameters_known = deferred == 0.0
        groups = (parameters, policies, bindings) if self.parameters_known else (parameters,)
        for group in groups:
            with ThreadPoolExecutor(max_workers=WRITERS) as pool:
                for manifest, _ in zip(group, pool.map(lambda m: resources.apply(api, m), group), strict=True):
                    self.applied[(str(manifest["kind"]), str(manifest["metadata"]["name"]))] = manifest
                    written[str(manifest["kind"])] += 1
        self.writes += written.total()
        rules = tuple(sorted(rule_ids(desired)))
        if not self.parameters_known:
            return AdmissionResult(written.total(), 0, rules, dict(written), deferred_seconds=deferred)
        wanted = {(str(m["kind"]), str(m["metadata"]["name"])) for m in desired}
        live = _live_admission_objects(api, selector(admission_config(settings))) if prune else list(self.applied)
        stale = [item for item in live if item not in wanted]
        for kind, name in stale:
            resources.delete(api, ADMISSION_API_VERSION, kind, name)
            self.applied.pop((kind, name), None)
        return AdmissionResult(applied=written.total(), pruned=len(stale), rules=rules, written=dict(written))


def apply_admission(
    api: kubernetes.client.ApiClient,
    settings: OperatorSettings,
    now: datetime,
    writer: AdmissionWriter | None = None,
) -> AdmissionResult:
    """Apply the parameter object, every policy and binding with the parameters read from the API (policies go
    before their bindings; with a writer, only those that changed since it last applied them); prune labelled
    objects no longer rendered. When the parameter kind is too new for admission, waits for it (a tool's call;
    the operator's controller defers instead)."""
    owner = owner_of(api, settings)
    desired = desired_admission(settings, observe_parameters(api, settings, now), owner)
    writer = writer or AdmissionWriter()
    if not writer.parameters_known:
        wait = parameters_known_in(api, now)
        if wait:
            time.sleep(wait)
            now += timedelta(seconds=wait)
    return writer.write(api, settings, desired, prune=True, now=now)


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
    removed = sum(resources.delete(api, ADMISSION_API_VERSION, kind, name) for kind, name in live)
    crd = resources.get(api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", PARAMETERS_CRD_NAME)
    if crd is not None and resources.get(api, PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME) is not None:
        # Last, and only once kube-apiserver has dropped the deleted bindings (it reloads them on a 1 s tick): a
        # binding that still denies would refuse everything it matches for want of its parameter object.
        time.sleep(POLICY_RELOAD_SECONDS)
        removed += resources.delete(api, PARAMETERS_API_VERSION, PARAMETERS_KIND, PARAMETERS_NAME)
    return removed


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
    username = own_username(api)
    manifests = render_access_admission(username)
    ordered = [m for m in manifests if not str(m["kind"]).endswith("Binding")]
    ordered += [m for m in manifests if str(m["kind"]).endswith("Binding")]
    for manifest in ordered:
        resources.apply(api, manifest)
    # The creator stamp JIT leftovers are attributed by (MutatingAdmissionPolicy, admissionregistration.k8s.io/v1
    # from kube-apiserver 1.36): where it is not served, leftovers are reported and never removed.
    stamp = creator_stamp_policy(username)
    try:
        for manifest in stamp:
            resources.apply(api, manifest)
    except kubernetes.client.ApiException as error:
        if error.status not in (403, 404):  # not served, or not ours to write (the chart installs it)
            raise
        return len(ordered)
    return len(ordered) + len(stamp)
