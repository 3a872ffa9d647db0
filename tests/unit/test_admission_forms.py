"""Admission forms and their rendering: registry contract, modes -> actions, selectors, ownership, parameters."""

import dataclasses
import json
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from access_hygiene.engine.admission.cel import (
    EPOCH,
    EXEMPTION_VARIABLES,
    NOW_CEL,
    exemption_parameters,
    parameter_floor,
)
from access_hygiene.engine.admission.forms import (
    AUDIT_ONLY,
    FORMS,
    ROLE_CAPABILITIES_PROFILE,
    RoleCapabilities,
    admission_table,
    compiled_forms,
)
from access_hygiene.engine.admission.guards import automount_mutation
from access_hygiene.engine.audit.runner import load_rules, run_audit
from access_hygiene.engine.catalogue.binding_walk import BINDING_RULES
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.engine.rbac.grant_ceiling import check_grant_ceiling
from access_hygiene.engine.rbac.permissions import resolve_cluster_roles
from access_hygiene.k8s.admission import AdmissionParameters, desired_admission
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.admission import (
    AdmissionConfig,
    AdmissionForm,
    OwnerRef,
    namespace_selector,
    render_admission,
    render_profile_policy,
    render_rule_policy,
)
from access_hygiene.render.admission_parameters import PARAMETERS_KIND, PARAMETERS_NAME, parameters_crd
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES
from access_hygiene.settings import OperatorSettings
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PARAMETERS = AdmissionParameters(floor=NOW, owner_exemptions={}, ceiling_rules=list(DEFAULT_GRANT_CEILING_RULES))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "admission.md"


def _titles(rule_id: str) -> tuple[str, str]:
    rule = load_rules()[rule_id]
    return rule.severity.value, rule.title


def test_every_compiled_id_is_a_catalogue_rule() -> None:
    catalogue = load_rules()
    assert set(FORMS) <= set(catalogue)
    assert set(AUDIT_ONLY) <= set(catalogue)
    assert not set(FORMS) & set(AUDIT_ONLY)


def test_at_least_the_issue_rules_are_compiled() -> None:
    for rule_id in ("AH-RBAC-001", "AH-RBAC-002", "AH-RBAC-003", "AH-RBAC-004", "AH-RBAC-016", "AH-RBAC-017",
                    "AH-RBAC-018", "AH-SA-003", "AH-SA-005"):  # fmt: skip
        assert rule_id in FORMS


CORE = sorted(rule_id for rule_id, spec in FORMS.items() if not spec.profile)
PROFILE = sorted(rule_id for rule_id, spec in FORMS.items() if spec.profile == ROLE_CAPABILITIES_PROFILE)


def test_forms_carry_rule_title_and_fix() -> None:
    forms = compiled_forms(_titles, ("system:kube-",))
    assert [f.rule_id for f in forms] == CORE  # the profile is left out unless chosen
    for form in forms:
        assert form.message.startswith(f"{form.rule_id} (")
        assert "Fix: " in form.message
        assert form.fix
        assert form.uses_parameters
        assert form.variables[:4] == (
            ("excludedPrefixes", '["system:kube-"]'),
            ("floor", "params.spec.floor"),
            ("now", NOW_CEL),
            ("ownerExemptions", "params.spec.?ownerExemptions.orValue({})"),
        )


def test_admission_now_is_read_from_the_request_not_a_clock() -> None:
    """No operator clock in the policies: "now" is the latest of the floor, the object's creationTimestamp (the
    server's time on CREATE) and the old object's managedFields times (UPDATE)."""
    assert "variables.floor" in NOW_CEL
    assert "object.metadata.creationTimestamp" in NOW_CEL
    assert "oldObject == null ? [] :" in NOW_CEL
    assert "managedFields" in NOW_CEL
    assert NOW_CEL.endswith(".max())")
    owner = dict(EXEMPTION_VARIABLES)["ownerExemption"]
    assert "timestamp(e.until) > variables.now" in owner


def test_floor_is_the_latest_passed_expiry() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    past = [datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 1, 11, 59, 30, 500000, tzinfo=UTC)]
    future = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert parameter_floor([*past, future], now) == past[1]
    assert parameter_floor([future], now) == EPOCH
    assert parameter_floor([], now) == EPOCH
    assert parameter_floor([now], now) == now  # expired at exactly its until (Exemption.is_active)
    objects = desired_admission(OperatorSettings(), dataclasses.replace(PARAMETERS, floor=past[1]))
    # rounded down to whole seconds: compares as a string with the API server's times
    assert _parameter_object(objects)["spec"]["floor"] == "2026-01-01T11:59:30Z"
    # ... and no policy carries it: a floor move is one write of the parameter object
    assert objects[1:] == desired_admission(OperatorSettings(), PARAMETERS)[1:]


def test_role_capabilities_profile_covers_every_capability_rule() -> None:
    """Every effective-permission rule a binding walk reports has a role-level form (AH-RBAC-001 is the binding's
    own: a role that grants everything is flagged by AH-RBAC-016/017)."""
    assert sorted(set(BINDING_RULES) - {"AH-RBAC-001"}) == PROFILE
    assert not set(PROFILE) & set(AUDIT_ONLY)
    for rule_id in PROFILE:
        assert {r.resource for r in FORMS[rule_id].resources} == {"roles", "clusterroles"}


@pytest.mark.parametrize(("profile", "actions"), [("warn", ["Warn", "Audit"]), ("deny", ["Deny"])])
def test_role_capabilities_profile_warns_or_denies(profile: RoleCapabilities, actions: list[str]) -> None:
    forms = compiled_forms(_titles, (), privileged_namespaces=("ops", "kube-system"), role_capabilities=profile)
    assert [f.rule_id for f in forms] == sorted(FORMS)
    for form in forms:
        bindings = {
            b["metadata"]["name"].rpartition("-")[2]: b["spec"]["validationActions"]
            for mode in ("audit", "enforce")  # cluster-scoped kinds get the default mode's binding only
            for b in render_rule_policy(form, AdmissionConfig(default_mode=mode))[1:]
        }
        assert bindings["audit"] == ["Warn", "Audit"]
        if form.rule_id in PROFILE:
            assert bindings["enforce"] == actions
            assert "granted by this role to whoever it is bound to" in form.message
            assert ("privilegedNamespaces", '["kube-system", "ops"]') in form.variables
        else:
            assert bindings["enforce"] == ["Deny"]  # the core forms whatever the profile


def _profile_objects(settings: OperatorSettings) -> dict[str, Any]:
    objects = desired_admission(settings, PARAMETERS)
    return {o["metadata"]["name"]: o for o in objects if "role-capabilities" in o["metadata"]["name"]}


def test_settings_choose_the_profile() -> None:
    """One policy for the whole profile (one validation per rule id, re-applied once per refresh), two bindings."""
    assert OperatorSettings().admission_role_capabilities == "warn"
    warning = _profile_objects(OperatorSettings())
    assert sorted(warning) == [f"access-hygiene-role-capabilities{s}" for s in ("", "-audit", "-enforce")]
    policy = warning["access-hygiene-role-capabilities"]
    assert policy["metadata"]["labels"]["accesshygiene.io/profile"] == "role-capabilities"
    assert policy["metadata"]["annotations"]["accesshygiene.io/rules"] == ",".join(PROFILE)
    assert [v["message"].split(" ")[0] for v in policy["spec"]["validations"]] == PROFILE
    assert warning["access-hygiene-role-capabilities-enforce"]["spec"]["validationActions"] == ["Warn", "Audit"]
    assert _profile_objects(OperatorSettings(admission_role_capabilities="off")) == {}
    denying = _profile_objects(OperatorSettings(admission_role_capabilities="deny"))
    assert denying["access-hygiene-role-capabilities-enforce"]["spec"]["validationActions"] == ["Deny"]
    assert denying["access-hygiene-role-capabilities-audit"]["spec"]["validationActions"] == ["Warn", "Audit"]


def test_operator_writes_are_not_judged_by_role_forms() -> None:
    """The Roles the operator writes are an AccessPolicy's grant, checked by the guards when the policy was admitted:
    the forms on roles skip the operator's own requests (in deny mode it could not write an allowed grant)."""
    forms = compiled_forms(_titles, (), role_capabilities="deny", operator_username="system:serviceaccount:o:op")
    skipping = sorted(f.rule_id for f in forms if ("not-the-operator",
                      'request.userInfo.username != "system:serviceaccount:o:op"') in f.match_conditions)  # fmt: skip
    assert skipping == sorted([*PROFILE, "AH-RBAC-016", "AH-RBAC-017", "AH-RBAC-018"])
    unknown = compiled_forms(_titles, (), role_capabilities="deny")
    assert not [f for f in unknown if any(name == "not-the-operator" for name, _ in f.match_conditions)]


def test_privileged_roles_admission_knows() -> None:
    """AH-RBAC-007 at admission knows the default roles that are privileged to bind (plus the role itself)."""
    variables = dict(compiled_forms(_titles, (), role_capabilities="warn")[0].variables)
    form = next(f for f in compiled_forms(_titles, (), role_capabilities="warn") if f.rule_id == "AH-RBAC-007")
    privileged = dict(form.variables)["privilegedRoles"]
    for name in ("cluster-admin", "admin", "edit", "system:controller:clusterrole-aggregation-controller"):
        assert f'"{name}"' in privileged
    assert '"view"' not in privileged
    assert "privilegedRoles" not in variables  # only the role-capabilities forms carry it


def _form(rule_id: str) -> AdmissionForm:
    return next(f for f in compiled_forms(_titles, ()) if f.rule_id == rule_id)


def test_modes_map_to_actions_and_selectors() -> None:
    config = AdmissionConfig(default_mode="audit", exempt_namespaces=("kube-system",), operator_namespace="ops")
    policy, enforce, audit = render_rule_policy(_form("AH-RBAC-001"), config)
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert enforce["spec"]["validationActions"] == ["Deny"]
    assert audit["spec"]["validationActions"] == ["Warn", "Audit"]
    assert enforce["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "accesshygiene.io/mode", "operator": "In", "values": ["enforce"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ops"]},
    ]
    assert audit["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0] == {
        "key": "accesshygiene.io/mode", "operator": "NotIn", "values": ["enforce"],
    }  # fmt: skip
    # Cluster-scoped kinds only in the default mode's binding (they carry no namespace label).
    enforce_resources = [r for rule in enforce["spec"]["matchResources"]["resourceRules"] for r in rule["resources"]]
    audit_resources = [r for rule in audit["spec"]["matchResources"]["resourceRules"] for r in rule["resources"]]
    assert enforce_resources == ["rolebindings"]
    assert sorted(audit_resources) == ["clusterrolebindings", "rolebindings"]
    # The parameter object (a custom kind: kube-apiserver 1.36 loses built-in paramKind informers for good,
    # kubernetes#130887); a missing one refuses where the binding denies, is skipped where it warns.
    assert policy["spec"]["paramKind"] == {"apiVersion": "accesshygiene.io/v1alpha1", "kind": PARAMETERS_KIND}
    assert enforce["spec"]["paramRef"] == {"name": PARAMETERS_NAME, "parameterNotFoundAction": "Deny"}
    assert audit["spec"]["paramRef"] == {"name": PARAMETERS_NAME, "parameterNotFoundAction": "Allow"}


def test_default_enforce_flips_the_selectors() -> None:
    config = AdmissionConfig(default_mode="enforce")
    assert namespace_selector(config, "enforce")["matchExpressions"][0] == {
        "key": "accesshygiene.io/mode", "operator": "NotIn", "values": ["audit"],
    }  # fmt: skip
    assert namespace_selector(config, "audit")["matchExpressions"][0]["operator"] == "In"


def test_exempt_label_selector_becomes_a_match_condition() -> None:
    config = AdmissionConfig(exempt_namespace_selector=(("team", "platform"), ("tier", "system")))
    policy = render_rule_policy(_form("AH-POD-001"), config)[0]
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert conditions["not-exempt-by-label"] == (
        'namespaceObject == null || !(namespaceObject.metadata.?labels[?"team"].orValue(\'\') == "platform" && '
        'namespaceObject.metadata.?labels[?"tier"].orValue(\'\') == "system")'
    )


def test_everything_is_labelled_owned_and_named_within_limits() -> None:
    owner = OwnerRef("rbac.authorization.k8s.io/v1", "ClusterRole", "access-hygiene-admission", "uid-1")
    settings = OperatorSettings(mode="audit")
    objects = desired_admission(settings, PARAMETERS, owner)
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        PARAMETERS_KIND,
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    for obj in objects:
        meta = obj["metadata"]
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "access-hygiene"
        assert meta["labels"]["app.kubernetes.io/component"] == "admission"
        if obj["kind"] == PARAMETERS_KIND:  # removed last by the operator (delete_admission), not by the collector
            continue
        assert meta["ownerReferences"] == [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "access-hygiene-admission",
             "uid": "uid-1"}
        ]  # fmt: skip
    # Each policy comes before its bindings; 2 bindings per rule (1 for cluster-scoped-only rules: the default
    # mode's), one per guard, one for the mutation.
    # The role-capabilities profile (on by default, warning) is one policy with two bindings.
    cluster_only = [f for f in FORMS.values() if not any(r.namespaced for r in f.resources)]
    assert [f.rule_id for f in cluster_only] == ["AH-RBAC-018"]
    assert len(objects) == 1 + 3 * len(CORE) - len(cluster_only) + 3 + 2 * 2 + 2  # 1: the parameter object
    policies = [o["metadata"]["name"] for o in objects if o["kind"].endswith("Policy")]
    bound = {o["spec"]["policyName"] for o in objects if o["kind"].endswith("Binding")}
    assert set(policies) == bound
    assert desired_admission(settings, PARAMETERS, owner) == objects  # deterministic


def test_mutation_binds_enforced_namespaces_only() -> None:
    objects = render_admission([], [], [automount_mutation()], AdmissionConfig(default_mode="audit"))
    policy, binding = objects
    assert policy["spec"]["mutations"][0]["patchType"] == "JSONPatch"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["enforce"]
    assert "validationActions" not in binding["spec"]


def test_exemption_parameters_cover_owned_objects() -> None:
    until = "2999-01-01"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {
                "accesshygiene.io/exempt": "AH-POD-003",
                "accesshygiene.io/exempt-owner": "team",
                "accesshygiene.io/exempt-reason": "legacy image",
                "accesshygiene.io/exempt-until": until,
            },
        },
    }
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [{"kind": "Deployment", "name": "web"}]},
    }
    expired = {
        **deployment,
        "metadata": {**deployment["metadata"], "name": "old", "annotations": {
            **deployment["metadata"]["annotations"], "accesshygiene.io/exempt-until": "2001-01-01"}},
    }  # fmt: skip
    snapshot = ClusterSnapshot.from_objects([deployment, replica_set, expired])
    ctx = AuditContext(now=datetime(2026, 1, 1, tzinfo=UTC))
    entry = [{"rules": "AH-POD-003", "until": "2999-01-02T00:00:00Z"}]  # a bare date: through that day
    assert exemption_parameters(snapshot, ctx) == {"Deployment.shop.web": entry, "ReplicaSet.shop.web-1": entry}
    # the ReplicaSet's own exemption with another until: both kept, each with its until (expiring separately)
    own = {**replica_set, "metadata": {**replica_set["metadata"], "annotations": {
        **deployment["metadata"]["annotations"], "accesshygiene.io/exempt": "AH-POD-001",
        "accesshygiene.io/exempt-until": "2026-01-01T10:00:00.9+02:00"}}}  # fmt: skip
    snapshot = ClusterSnapshot.from_objects([deployment, own])
    assert exemption_parameters(snapshot, ctx)["ReplicaSet.shop.web-1"] == [
        {"rules": "AH-POD-001", "until": "2026-01-01T08:00:00Z"},  # in UTC, rounded down: never late
        *entry,
    ]


def _parameter_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == PARAMETERS_KIND]
    assert len(found) == 1
    assert objects[0] is found[0]  # written before the policies that read it
    return found[0]


def test_ceiling_rules_are_in_the_parameter_object() -> None:
    objects = desired_admission(OperatorSettings(), PARAMETERS)
    name = "access-hygiene-accesspolicy-ceiling"
    guard = next(o for o in objects if o["metadata"]["name"] == name)
    assert {"name": "ceiling", "expression": "params.spec.?ceiling.orValue([])"} in guard["spec"]["variables"]
    ceiling = _parameter_object(objects)["spec"]["ceiling"]
    keys = ("apiGroups", "resources", "verbs", "resourceNames")
    resource_rules = [r for r in DEFAULT_GRANT_CEILING_RULES if not r.get("nonResourceURLs")]
    assert ceiling == [{k: list(r.get(k) or []) for k in keys} for r in resource_rules]  # every key present
    empty = AdmissionParameters(floor=NOW, owner_exemptions={}, ceiling_rules=[])
    changed = desired_admission(OperatorSettings(), empty)
    assert "ceiling" not in _parameter_object(changed)["spec"]  # empty: left out, read as []
    assert changed[1:] == objects[1:]  # a ceiling change is one write of the parameter object


def test_policies_that_read_parameters_name_the_parameter_object() -> None:
    """Exactly the policies whose CEL reads `params` name the parameter kind; their bindings name the object,
    failing closed (missing object: refused) where they deny and skipping where they only warn."""
    objects = desired_admission(OperatorSettings(admission_role_capabilities="deny"), PARAMETERS)
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"].endswith("Policy")}
    for name, policy in policies.items():
        reads = "params." in json.dumps(policy["spec"])
        assert ("paramKind" in policy["spec"]) == reads, name
        if reads:
            assert policy["spec"]["paramKind"] == {"apiVersion": "accesshygiene.io/v1alpha1", "kind": PARAMETERS_KIND}
    readers = {n for n, p in policies.items() if "paramKind" in p["spec"]}
    assert len(readers) == len(CORE) + 2  # every rule policy, the profile's, the ceiling guard
    for binding in (o for o in objects if o["kind"].endswith("Binding")):
        ref = binding["spec"].get("paramRef")
        if binding["spec"]["policyName"] not in readers:
            assert ref is None
            continue
        denies = "Deny" in binding["spec"]["validationActions"]
        assert ref == {"name": PARAMETERS_NAME, "parameterNotFoundAction": "Deny" if denies else "Allow"}


def test_parameter_object_fits_its_crd_schema() -> None:
    """The parameter object as rendered is what the CRD's schema describes (kube-apiserver types `params` by it)."""
    entries = {"Deployment.shop.web": [{"rules": "AH-POD-001", "until": "2030-01-01T00:00:00Z"}]}
    parameters = dataclasses.replace(PARAMETERS, owner_exemptions=entries)
    owner = OwnerRef("rbac.authorization.k8s.io/v1", "ClusterRole", "access-hygiene-admission", "uid-1")
    obj = _parameter_object(desired_admission(OperatorSettings(), parameters, owner))
    schema = parameters_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(obj, schema)
    assert obj["metadata"]["name"] == PARAMETERS_NAME
    assert "ownerReferences" not in obj["metadata"]  # removed last by the operator, not by the garbage collector
    assert obj["spec"]["ownerExemptions"] == entries
    empty = _parameter_object(desired_admission(OperatorSettings(), PARAMETERS))
    assert "ownerExemptions" not in empty["spec"]
    jsonschema.validate(empty, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**obj, "spec": {**obj["spec"], "ownerExemptions": {"x": [{"rules": "*"}]}}}, schema)


def test_rule_table_in_docs_is_current() -> None:
    assert admission_table(load_rules()) in DOCS.read_text()


def test_audit_engine_is_the_python_verdict() -> None:
    """The differential test's Python side: run_audit on the object alone plus context, only the rule."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
           "spec": {"hostIPC": True, "containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
    findings = run_audit(ClusterSnapshot.from_objects([pod]), AuditContext(now=PINNED_NOW), only=["AH-POD-002"])
    assert [f.rule_id for f in findings] == ["AH-POD-002"]


# --- the requester check under the default grant ceiling (docs/admission.md, "AccessPolicy guards") --------

QUOTA_UPDATE = {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update"]}


def _edit_allows(verb: str, group: str, resource: str) -> bool:
    """Does Kubernetes' built-in `edit` (aggregated, from the shipped bootstrap roles) grant this?"""
    rules = resolve_cluster_roles(bootstrap_cluster_roles())["edit"]
    name, _, subresource = resource.partition("/")
    return any(rule.allows(verb, group, name, subresource) for rule in rules)


def _ceiling_refusals(rule: dict[str, list[str]], ceiling: list[dict[str, list[str]]]) -> list[str]:
    spec = AccessPolicySpec.model_validate({"rbac": {"rules": [rule]}})
    policy = resolve_policy({"name": "app", "namespace": "ns"}, spec)
    return [v.capability for v in check_grant_ceiling(policy, ceiling)]


def test_edit_holds_every_permission_of_the_default_ceiling() -> None:
    """So under the default ceiling the requester check never refuses an edit-only user what the ceiling allows."""
    for rule in DEFAULT_GRANT_CEILING_RULES:
        for group, resource, verb in product(rule["apiGroups"], rule["resources"], rule["verbs"]):
            assert _edit_allows(verb, group, resource), (verb, group, resource)


def test_quota_update_is_outside_the_default_ceiling_and_not_held_by_edit() -> None:
    """The decision issue 25 item 16 asked for: the ceiling is right to refuse `update resourcequotas` (an app
    could lift its own quota); only a widened ceiling lets the requester check decide it."""
    assert _ceiling_refusals(QUOTA_UPDATE, DEFAULT_GRANT_CEILING_RULES) == ["outside-ceiling"]
    assert not _edit_allows("update", "", "resourcequotas")
    assert _ceiling_refusals(QUOTA_UPDATE, [*DEFAULT_GRANT_CEILING_RULES, QUOTA_UPDATE]) == []


def test_docs_say_what_the_default_ceiling_does() -> None:
    text = " ".join(DOCS.read_text().split())
    assert "`edit` role holds every permission of the default grant ceiling" in text
    assert "The default ceiling leaves `update resourcequotas` out on purpose" in text
    assert "a permission inside the ceiling that `edit` lacks (e.g. `update resourcequotas`)" not in text


def test_scan_reads_null_run_as_fields() -> None:
    """`scan -f` should judge a container's `runAsUser: null` as the API server stores it (no field, so the pod's
    runAsUser applies). Found by the null variants of the admission differential; the differential leaves these two
    container fields non-null until this passes (tests/cluster/test_admission.py, security_context)."""

    def verdict(pod_context: dict[str, object], container_context: dict[str, object]) -> list[str]:
        container = {
            "name": "c",
            "image": "x",
            "securityContext": {**container_context, "allowPrivilegeEscalation": False},
        }
        spec = {"securityContext": pod_context, "containers": [container]}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}
        return [
            f.message
            for f in run_audit(ClusterSnapshot.from_objects([pod]), AuditContext(now=NOW), only=["AH-POD-003"])
        ]

    for field, pod_value in (("runAsUser", 1000), ("runAsNonRoot", True)):
        assert verdict({field: pod_value}, {}) == []  # the container inherits the pod's value
        assert verdict({field: pod_value}, {field: None}) == [], field  # as the API server stores it: the same


def test_profile_policy_needs_forms_that_judge_alike() -> None:
    """One policy holds the whole profile only because its forms share resources, conditions, actions and
    variables; a form that does not is refused rather than silently judged like the others."""
    forms = [f for f in compiled_forms(_titles, (), role_capabilities="deny") if f.rule_id in PROFILE]
    assert len(render_profile_policy(ROLE_CAPABILITIES_PROFILE, forms, AdmissionConfig())) == 3
    odd = dataclasses.replace(forms[1], enforce_actions=("Warn", "Audit"))
    with pytest.raises(ValueError, match=forms[1].rule_id):
        render_profile_policy(ROLE_CAPABILITIES_PROFILE, [forms[0], odd], AdmissionConfig())
