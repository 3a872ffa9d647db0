"""Native admission policies: ValidatingAdmissionPolicy (+ bindings) per compiled rule, the AccessPolicy
guards, and the MutatingAdmissionPolicy that turns token automount off.

Pure: forms (CEL built by engine/admission/forms.py from the rule knowledge, with the operator's
parameters such as the floor of "now" and the owner exemptions already in their variables) and settings in,
plain manifest dicts out.
Modes map to binding actions: enforce -> Deny, audit -> Warn + Audit. The parameters that change (the floor of
"now", owner exemptions, the grant ceiling) are in one custom-resource parameter object
(render/admission_parameters.py: a built-in paramKind is not usable, kubernetes/kubernetes#130887), named by the
policies that read them (`uses_parameters`) and their bindings; everything else is rendered into the policies.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.render.admission_parameters import param_kind, param_ref, render_parameters
from access_hygiene.render.names import object_name
from access_hygiene.render.namespace import NAMESPACE_NAME_LABEL

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
MODE_LABEL = f"{API_GROUP}/mode"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT_VALUE = "admission"
RULE_LABEL = f"{API_GROUP}/rule"
PROFILE_LABEL = f"{API_GROUP}/profile"
RULES_ANNOTATION = f"{API_GROUP}/rules"
POLICY_PREFIX = "access-hygiene"
Mode = Literal["audit", "enforce"]
Obj = dict[str, Any]


@dataclass(frozen=True)
class MatchResource:
    """One resource a form applies to (apiGroup "" is the core group)."""

    api_group: str
    resource: str
    namespaced: bool


@dataclass(frozen=True)
class AdmissionForm:
    """The admission form of one rule id: where it applies and its CEL.

    `variables` are (name, CEL) pairs evaluated lazily in order; `violation` is true when the object
    breaks the rule, `exempt` when an active exemption covers it (evaluated only for violations).
    """

    rule_id: str
    severity: str
    title: str
    fix: str
    resources: tuple[MatchResource, ...]
    violation: str
    exempt: str
    variables: tuple[tuple[str, str], ...] = ()
    match_conditions: tuple[tuple[str, str], ...] = ()
    # What the enforce-mode binding does with a violation (the audit-mode binding always warns and audits).
    enforce_actions: tuple[str, ...] = ("Deny",)
    # The opt-in profile the form belongs to ("" for the core forms): a profile's forms share one policy.
    profile: str = ""
    # Reads `params` (the parameter object): the policy names its kind, the bindings the object.
    uses_parameters: bool = False

    @property
    def message(self) -> str:
        return f"{self.rule_id} ({self.severity}) {self.title}. Fix: {self.fix}"


@dataclass(frozen=True)
class OwnerRef:
    """A cluster-scoped object the rendered policies belong to (garbage-collected with it)."""

    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class AdmissionConfig:
    """Settings-derived inputs of the rendering."""

    default_mode: Mode = "audit"
    exempt_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    exempt_namespace_selector: tuple[tuple[str, str], ...] = ()
    operator_namespace: str = "access-hygiene"
    owner: OwnerRef | None = None


def labels(**extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, COMPONENT_LABEL: COMPONENT_VALUE, **extra}


def selector(config: AdmissionConfig) -> str:
    """The label selector that finds every object this module renders (for pruning and uninstall)."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{COMPONENT_LABEL}={COMPONENT_VALUE}"


def _metadata(config: AdmissionConfig, name: str, **extra: str) -> Obj:
    meta: Obj = {"name": name, "labels": labels(**extra)}
    if config.owner is not None:
        owner = config.owner
        meta["ownerReferences"] = [
            {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid}
        ]
    return meta


def policy_name(rule_id: str) -> str:
    return object_name(POLICY_PREFIX, rule_id.lower())


def _resource_rules(resources: Sequence[MatchResource], operations: Sequence[str]) -> list[Obj]:
    groups: dict[str, list[str]] = {}
    for res in resources:
        groups.setdefault(res.api_group, []).append(res.resource)
    return [
        {"apiGroups": [group], "apiVersions": ["*"], "resources": sorted(names), "operations": list(operations)}
        for group, names in sorted(groups.items())
    ]


def namespace_selector(config: AdmissionConfig, mode: Mode) -> Obj:
    """Namespaces in `mode` (label accesshygiene.io/mode, else the default), minus the exempt ones."""
    other: Mode = "audit" if mode == "enforce" else "enforce"
    expressions: list[Obj] = []
    if mode == config.default_mode:
        expressions.append({"key": MODE_LABEL, "operator": "NotIn", "values": [other]})
    else:
        expressions.append({"key": MODE_LABEL, "operator": "In", "values": [mode]})
    exempt = sorted({*config.exempt_namespaces, config.operator_namespace})
    expressions.append({"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": exempt})
    return {"matchExpressions": expressions}


def _cel_string(value: str) -> str:
    return json.dumps(value)


def exempt_selector_condition(config: AdmissionConfig) -> list[Obj]:
    """Namespaces carrying every label of the configured exempt selector are skipped (a conjunction a
    label selector cannot negate, so it is a match condition)."""
    if not config.exempt_namespace_selector:
        return []
    checks = " && ".join(
        f"namespaceObject.metadata.?labels[?{_cel_string(k)}].orValue('') == {_cel_string(v)}"
        for k, v in config.exempt_namespace_selector
    )
    return [{"name": "not-exempt-by-label", "expression": f"namespaceObject == null || !({checks})"}]


def _binding(
    config: AdmissionConfig,
    policy: str,
    mode: Mode,
    resources: Sequence[MatchResource],
    operations: Sequence[str],
    *,
    mutating: bool = False,
    enforce_actions: Sequence[str] = ("Deny",),
    parameters: bool = False,
) -> Obj:
    """One binding per mode. Cluster-scoped kinds follow the default mode only (they have no namespace)."""
    scoped = [r for r in resources if r.namespaced or mode == config.default_mode]
    spec: Obj = {
        "policyName": policy,
        "matchResources": {
            "namespaceSelector": namespace_selector(config, mode),
            "resourceRules": _resource_rules(scoped, operations),
        },
    }
    if not mutating:
        spec["validationActions"] = list(enforce_actions) if mode == "enforce" else ["Warn", "Audit"]
    if parameters:
        spec["paramRef"] = param_ref(enforcing="Deny" in spec.get("validationActions", ()))
    kind = "MutatingAdmissionPolicyBinding" if mutating else "ValidatingAdmissionPolicyBinding"
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": kind,
        "metadata": _metadata(config, object_name(policy, mode)),
        "spec": spec,
    }


RULE_OPERATIONS = ("CREATE", "UPDATE")


def render_rule_policy(form: AdmissionForm, config: AdmissionConfig) -> list[Obj]:
    """The ValidatingAdmissionPolicy of one rule plus its enforce (Deny) and audit (Warn+Audit) bindings."""
    name = policy_name(form.rule_id)
    variables = [{"name": n, "expression": e} for n, e in form.variables]
    variables += [{"name": "violation", "expression": form.violation}, {"name": "exempt", "expression": form.exempt}]
    conditions = [{"name": n, "expression": e} for n, e in form.match_conditions] + exempt_selector_condition(config)
    spec: Obj = {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": _resource_rules(form.resources, RULE_OPERATIONS)},
        "variables": variables,
        "validations": [
            {"expression": "!variables.violation || variables.exempt", "message": form.message, "reason": "Forbidden"}
        ],
    }
    if conditions:
        spec["matchConditions"] = conditions
    if form.uses_parameters:
        spec["paramKind"] = param_kind()
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _metadata(config, name, **{RULE_LABEL: form.rule_id}),
        "spec": spec,
    }
    bindings = [
        _binding(
            config,
            name,
            mode,
            form.resources,
            RULE_OPERATIONS,
            enforce_actions=form.enforce_actions,
            parameters=form.uses_parameters,
        )
        for mode in _modes(form.resources, config)
    ]
    return [policy, *bindings]


def _variable_name(rule_id: str) -> str:
    return "violation_" + rule_id.lower().replace("-", "_")


def render_profile_policy(profile: str, forms: Sequence[AdmissionForm], config: AdmissionConfig) -> list[Obj]:
    """One ValidatingAdmissionPolicy for all forms of an opt-in profile (one validation per rule id, each with its
    rule's message and exemption), plus its bindings. The forms must share their resources, match conditions,
    actions and variables (they judge the same object the same way): one policy is rewritten when the parameters
    change instead of one per rule."""
    first = forms[0]
    for form in forms:
        shared = (form.resources, form.match_conditions, form.enforce_actions, form.variables, form.uses_parameters)
        if (*shared, form.profile) != (
            first.resources,
            first.match_conditions,
            first.enforce_actions,
            first.variables,
            first.uses_parameters,
            profile,
        ):
            raise ValueError(f"admission form {form.rule_id} does not share the {profile} profile's settings")
    name = object_name(POLICY_PREFIX, profile)
    variables = [{"name": n, "expression": e} for n, e in first.variables]
    variables += [{"name": _variable_name(f.rule_id), "expression": f.violation} for f in forms]
    conditions = [{"name": n, "expression": e} for n, e in first.match_conditions] + exempt_selector_condition(config)
    spec: Obj = {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": _resource_rules(first.resources, RULE_OPERATIONS)},
        "variables": variables,
        "validations": [
            {
                "expression": f"!variables.{_variable_name(f.rule_id)} || ({f.exempt})",
                "message": f.message,
                "reason": "Forbidden",
            }
            for f in forms
        ],
    }
    if conditions:
        spec["matchConditions"] = conditions
    if first.uses_parameters:
        spec["paramKind"] = param_kind()
    metadata = _metadata(config, name, **{PROFILE_LABEL: profile})
    metadata["annotations"] = {RULES_ANNOTATION: ",".join(f.rule_id for f in forms)}
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata,
        "spec": spec,
    }
    bindings = [
        _binding(
            config,
            name,
            mode,
            first.resources,
            RULE_OPERATIONS,
            enforce_actions=first.enforce_actions,
            parameters=first.uses_parameters,
        )
        for mode in _modes(first.resources, config)
    ]
    return [policy, *bindings]


def _modes(resources: Sequence[MatchResource], config: AdmissionConfig) -> list[Mode]:
    """Both modes, except that a policy on cluster-scoped kinds only gets the default mode's binding (a
    binding with no resource rules would match everything its policy matches)."""
    if any(r.namespaced for r in resources):
        return ["enforce", "audit"]
    return [config.default_mode]


@dataclass(frozen=True)
class GuardPolicy:
    """A validating policy that is not a catalogue rule (the AccessPolicy guards): always Deny."""

    name: str
    resources: tuple[MatchResource, ...]
    operations: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]
    validations: tuple[Mapping[str, str], ...]
    match_conditions: tuple[tuple[str, str], ...] = ()
    uses_parameters: bool = False  # reads `params` (the parameter object)


def render_guard_policy(guard: GuardPolicy, config: AdmissionConfig) -> list[Obj]:
    name = object_name(POLICY_PREFIX, guard.name)
    spec: Obj = {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": _resource_rules(guard.resources, guard.operations)},
        "variables": [{"name": n, "expression": e} for n, e in guard.variables],
        "validations": [dict(v) for v in guard.validations],
    }
    if guard.match_conditions:
        spec["matchConditions"] = [{"name": n, "expression": e} for n, e in guard.match_conditions]
    if guard.uses_parameters:
        spec["paramKind"] = param_kind()
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": _metadata(config, name),
        "spec": spec,
    }
    binding_spec: Obj = {"policyName": name, "validationActions": ["Deny"]}
    if guard.uses_parameters:
        binding_spec["paramRef"] = param_ref(enforcing=True)
    binding = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": _metadata(config, name),
        "spec": binding_spec,
    }
    return [policy, binding]


@dataclass(frozen=True)
class MutationForm:
    """A MutatingAdmissionPolicy body: match conditions and JSONPatch CEL."""

    name: str
    resources: tuple[MatchResource, ...]
    match_conditions: tuple[tuple[str, str], ...]
    json_patch: str


def render_mutation(mutation: MutationForm, config: AdmissionConfig) -> list[Obj]:
    """The MutatingAdmissionPolicy, bound to enforced namespaces only (audit mode changes nothing)."""
    name = object_name(POLICY_PREFIX, mutation.name)
    conditions = [{"name": n, "expression": e} for n, e in mutation.match_conditions]
    conditions += exempt_selector_condition(config)
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "MutatingAdmissionPolicy",
        "metadata": _metadata(config, name),
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {"resourceRules": _resource_rules(mutation.resources, ("CREATE",))},
            "matchConditions": conditions,
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": mutation.json_patch}}],
        },
    }
    binding = _binding(config, name, "enforce", mutation.resources, ("CREATE",), mutating=True)
    binding["metadata"]["name"] = name
    return [policy, binding]


def render_parameter_object(
    floor: str,
    owner_exemptions: Mapping[str, Sequence[Mapping[str, str]]],
    ceiling: Sequence[Mapping[str, Sequence[str]]],
    config: AdmissionConfig,
) -> Obj:
    """The parameter object the policies read, labelled like them but not owned: the garbage collector removes
    dependents in no particular order, and an enforce binding still bound (kube-apiserver reloads policies on a
    1 s tick) refuses what it matches once its parameter object is gone. delete_admission removes it last."""
    return render_parameters(floor, owner_exemptions, ceiling, {"labels": labels()})


def render_admission(
    forms: Sequence[AdmissionForm],
    guards: Sequence[GuardPolicy],
    mutations: Sequence[MutationForm],
    config: AdmissionConfig,
) -> list[Obj]:
    """Every policy and binding (the parameter object is render_parameter_object), policies before their bindings."""
    objects: list[Obj] = []
    profiles: dict[str, list[AdmissionForm]] = {}
    for form in sorted(forms, key=lambda f: f.rule_id):
        if form.profile:
            profiles.setdefault(form.profile, []).append(form)
        else:
            objects.extend(render_rule_policy(form, config))
    for profile, members in sorted(profiles.items()):
        objects.extend(render_profile_policy(profile, members, config))
    for guard in guards:
        objects.extend(render_guard_policy(guard, config))
    for mutation in mutations:
        objects.extend(render_mutation(mutation, config))
    return objects
