"""Generates the accesshygiene.io CustomResourceDefinitions (AccessPolicy, and the just-in-time access kinds)
from the pydantic models.

Pydantic's JSON schema is not a structural schema: $refs are inlined, titles dropped,
Optional[X] becomes X (absence is how Kubernetes says "unset"), and defaults that depend
on metadata are left to the operator.
"""

from dataclasses import dataclass
from typing import Any, Literal

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.models.access import (
    AccessApprovalSpec,
    AccessApprovalStatus,
    AccessEligibilitySpec,
    AccessEligibilityStatus,
    AccessRequestSpec,
    AccessRequestStatus,
)
from access_hygiene.models.policy import AccessPolicySpec
from access_hygiene.models.status import AccessPolicyStatus

PLURAL = "accesspolicies"
KIND = "AccessPolicy"
CRD_NAME = f"{PLURAL}.{API_GROUP}"


@dataclass(frozen=True)
class KindDefinition:
    """What a CRD says besides its schema: names, scope, printer columns, descriptions."""

    kind: str
    plural: str
    singular: str
    short_name: str
    scope: Literal["Namespaced", "Cluster"]
    spec_model: type[Any]
    status_model: type[Any]
    description: str
    columns: tuple[tuple[str, str, str], ...]  # (name, type, jsonPath)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def file_name(self) -> str:
        return f"{self.crd_name}.yaml"


_AGE = ("Age", "date", ".metadata.creationTimestamp")
_READY = ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status')

ACCESS_POLICY = KindDefinition(
    kind=KIND,
    plural=PLURAL,
    singular="accesspolicy",
    short_name="ap",
    scope="Namespaced",
    spec_model=AccessPolicySpec,
    status_model=AccessPolicyStatus,
    description="Declares what one application may access; the operator generates its ServiceAccount, "
    "Role/RoleBinding and NetworkPolicies.",
    columns=(
        _READY,
        ("Mode", "string", ".status.mode"),
        ("ServiceAccount", "string", ".status.serviceAccount"),
        ("Violations", "integer", ".status.violations"),
        _AGE,
    ),
)
ACCESS_ELIGIBILITY = KindDefinition(
    kind="AccessEligibility",
    plural="accesseligibilities",
    singular="accesseligibility",
    short_name="acel",
    scope="Cluster",
    spec_model=AccessEligibilitySpec,
    status_model=AccessEligibilityStatus,
    description="Who may request just-in-time access to a role, where, for how long, and who approves.",
    columns=(
        ("Role", "string", ".spec.roleRef.name"),
        ("MaxDuration", "string", ".spec.maxDuration"),
        _READY,
        ("SelfApproval", "boolean", ".status.selfApproval.allowed"),
        _AGE,
    ),
)
ACCESS_REQUEST = KindDefinition(
    kind="AccessRequest",
    plural="accessrequests",
    singular="accessrequest",
    short_name="acreq",
    scope="Namespaced",
    spec_model=AccessRequestSpec,
    status_model=AccessRequestStatus,
    description="A request for just-in-time access in this namespace under an AccessEligibility; the operator "
    "binds the role for the approved window only.",
    columns=(
        ("Requester", "string", ".spec.requester.username"),
        ("Role", "string", ".status.role"),
        ("Namespace", "string", ".metadata.namespace"),
        ("State", "string", ".status.state"),
        ("Expires", "string", ".status.expiresAt"),
        _AGE,
    ),
)
ACCESS_APPROVAL = KindDefinition(
    kind="AccessApproval",
    plural="accessapprovals",
    singular="accessapproval",
    short_name="acapp",
    scope="Namespaced",
    spec_model=AccessApprovalSpec,
    status_model=AccessApprovalStatus,
    description="A decision (Approve or Deny) on one AccessRequest of this namespace.",
    columns=(
        ("Request", "string", ".spec.request"),
        ("Approver", "string", ".spec.approver.username"),
        ("Decision", "string", ".spec.decision"),
        _AGE,
    ),
)
# Every CRD of the accesshygiene.io group, in install order.
KINDS = (ACCESS_POLICY, ACCESS_ELIGIBILITY, ACCESS_REQUEST, ACCESS_APPROVAL)
ACCESS_KINDS = (ACCESS_ELIGIBILITY, ACCESS_REQUEST, ACCESS_APPROVAL)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        branches = [b for b in any_of if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if node.get("x-kubernetes-int-or-string"):
            return _structural({**rest, "x-kubernetes-int-or-string": True}, defs)
        if len(branches) == 1:
            return _structural({**branches[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {any_of!r} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        # Structural schemas forbid properties beside additionalProperties; pruning drops unknown fields.
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and (value is None or (value == {} and node.get("type") == "object")):
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = _structural(value, defs) if isinstance(value, (dict, list)) else value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def _schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return dict(_structural(raw, defs))


def spec_schema() -> dict[str, Any]:
    return _schema_of(AccessPolicySpec)


def build_crd(definition: KindDefinition = ACCESS_POLICY) -> dict[str, Any]:
    spec = _schema_of(definition.spec_model)
    spec["description"] = definition.spec_model.__doc__
    status = _schema_of(definition.status_model)
    status["description"] = "Observed state, written by the operator."
    columns = [{"name": name, "type": kind, "jsonPath": path} for name, kind, path in definition.columns]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": definition.crd_name,
            "labels": {
                "app.kubernetes.io/name": "access-hygiene",
                "app.kubernetes.io/part-of": "access-hygiene",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": definition.scope,
            "names": {
                "kind": definition.kind,
                "listKind": f"{definition.kind}List",
                "plural": definition.plural,
                "singular": definition.singular,
                "shortNames": [definition.short_name],
                "categories": ["access-hygiene"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": definition.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crds() -> list[dict[str, Any]]:
    """Every CRD of the group, in install order."""
    return [build_crd(definition) for definition in KINDS]


def render_crd_yaml(definition: KindDefinition = ACCESS_POLICY) -> str:
    import yaml  # local: models stay import-light for the operator hot path

    header = "# Generated from access_hygiene.models by `access-hygiene crd`. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(definition), sort_keys=False, width=120)
