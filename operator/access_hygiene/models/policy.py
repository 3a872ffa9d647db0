"""AccessPolicy spec: the source of truth for the CRD schema (see models/crd.py)."""

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from access_hygiene.models.base import WireModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

Mode = Literal["audit", "enforce"]
AppName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ShortName = Annotated[str, Field(min_length=1, max_length=253)]
Labels = Annotated[dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]], Field(max_length=32)]
Verb = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^([a-z][a-zA-Z]*|\*)$")]


class PolicyRule(WireModel):
    """One RBAC rule, with the same fields as rbac.authorization.k8s.io/v1 PolicyRule (resource rules only)."""

    api_groups: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=lambda: [""],
        max_length=16,
        description='API groups; "" is the core group. Defaults to the core group.',
    )
    resources: list[ShortName] = Field(min_length=1, max_length=32, description="Resources, e.g. pods or pods/log.")
    resource_names: list[ShortName] = Field(
        default_factory=list, max_length=64, description="Restricts the rule to these object names."
    )
    verbs: list[Verb] = Field(min_length=1, max_length=16, description="Verbs, e.g. get, list, watch.")


class RbacSpec(WireModel):
    rules: list[PolicyRule] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaced permissions for the app's ServiceAccount (one Role + RoleBinding).",
    )
    cluster_rules: list[PolicyRule] = Field(
        default_factory=list,
        max_length=32,
        description="Cluster-wide permissions (ClusterRole + ClusterRoleBinding). "
        "Refused unless the operator allows them.",
    )


class ServiceAccountSpec(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)] | None = Field(
        default=None, description="ServiceAccount name. Defaults to the app name."
    )
    automount_token: bool | None = Field(
        default=None,
        description="Mount an API token into pods. Defaults to true only when rbac rules are declared.",
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict, max_length=32)


class LabelSelector(WireModel):
    match_labels: Labels = Field(default_factory=dict)


class IPBlock(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isCIDR(self.cidr)", "message": "cidr must be a CIDR such as 10.0.0.0/16"},
                {
                    "rule": "!has(self.except) || self.except.all(e, isCIDR(e))",
                    "message": "every except entry must be a CIDR",
                },
            ]
        }
    )

    cidr: Annotated[str, Field(min_length=1, max_length=64)]
    except_: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, alias="except", max_length=16)

    @field_validator("cidr", "except_")
    @classmethod
    def _check_cidr(cls, value: str | list[str]) -> str | list[str]:
        for cidr in [value] if isinstance(value, str) else value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/16") from None
        return value


class Peer(WireModel):
    """Who traffic may come from / go to. app and podSelector select pods; namespace narrows where."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.ipBlock) || (!has(self.app) && !has(self.podSelector) "
                    "&& !has(self.namespace) && !has(self.namespaceSelector))",
                    "message": "ipBlock cannot be combined with app, podSelector, namespace or namespaceSelector",
                },
                {
                    "rule": "!(has(self.app) && has(self.podSelector))",
                    "message": "use either app or podSelector, not both",
                },
                {
                    "rule": "!(has(self.namespace) && has(self.namespaceSelector))",
                    "message": "use either namespace or namespaceSelector, not both",
                },
                {
                    "rule": "has(self.app) || has(self.podSelector) || has(self.namespace) "
                    "|| has(self.namespaceSelector) || has(self.ipBlock)",
                    "message": "a peer needs at least one of app, podSelector, namespace, namespaceSelector, ipBlock",
                },
            ]
        }
    )

    app: AppName | None = Field(default=None, description="Pods labelled app.kubernetes.io/name=<app>.")
    pod_selector: LabelSelector | None = None
    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = Field(
        default=None, description="Namespace of the peer pods. Defaults to the policy's namespace."
    )
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> "Peer":
        if self.ip_block and any((self.app, self.pod_selector, self.namespace, self.namespace_selector)):
            raise ValueError("ipBlock cannot be combined with app, podSelector, namespace or namespaceSelector")
        if self.app and self.pod_selector:
            raise ValueError("use either app or podSelector, not both")
        if self.namespace and self.namespace_selector:
            raise ValueError("use either namespace or namespaceSelector, not both")
        if not any((self.app, self.pod_selector, self.namespace, self.namespace_selector, self.ip_block)):
            raise ValueError("a peer needs at least one of app, podSelector, namespace, namespaceSelector, ipBlock")
        return self


class PortSpec(WireModel):
    port: Annotated[int, Field(ge=1, le=65535)] | Annotated[str, Field(min_length=1, max_length=15)] = Field(
        description="Port number or named port.",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    end_port: Annotated[int, Field(ge=1, le=65535)] | None = None


class IngressRule(WireModel):
    from_: list[Peer] = Field(alias="from", min_length=1, max_length=32)
    ports: list[PortSpec] = Field(default_factory=list, max_length=32, description="Empty means all ports.")


class EgressRule(WireModel):
    to: list[Peer] = Field(min_length=1, max_length=32)
    ports: list[PortSpec] = Field(default_factory=list, max_length=32, description="Empty means all ports.")


class NetworkSpec(WireModel):
    """Declared traffic. Everything else to and from the app's pods is denied."""

    ingress: list[IngressRule] = Field(default_factory=list, max_length=32)
    egress: list[EgressRule] = Field(default_factory=list, max_length=32)
    dns: bool = Field(default=True, description="Allow DNS egress to the cluster DNS.")
    kube_api_server: bool = Field(
        default=False, alias="kubeAPIServer", description="Allow egress to the Kubernetes API server."
    )


class AccessPolicySpec(WireModel):
    """What one application may access, and what may access it."""

    app: AppName | None = Field(default=None, description="Application name. Defaults to the policy's name.")
    pod_selector: LabelSelector | None = Field(
        default=None, description="The app's pods. Defaults to app.kubernetes.io/name=<app>."
    )
    service_account: ServiceAccountSpec = Field(default_factory=ServiceAccountSpec)
    rbac: RbacSpec = Field(default_factory=RbacSpec)
    network: NetworkSpec | None = Field(
        default=None,
        description="Traffic rules. When set, the app's pods get default deny plus these allows.",
    )
    mode: Mode | None = Field(default=None, description="audit or enforce. Defaults to the operator's mode.")


class ResolvedPolicy(WireModel):
    """A policy with its defaults filled in from metadata: what render/ works from."""

    name: str
    namespace: str
    uid: str
    generation: int
    app: str
    service_account_name: str
    automount_token: bool
    pod_labels: dict[str, str]
    spec: AccessPolicySpec


APP_LABEL = "app.kubernetes.io/name"


def resolve_policy(metadata: dict[str, Any], spec: AccessPolicySpec) -> ResolvedPolicy:
    """Fill the defaults that depend on the object's metadata."""
    name = str(metadata["name"])
    app = spec.app or name
    pod_labels = dict(spec.pod_selector.match_labels) if spec.pod_selector else {APP_LABEL: app}
    automount = spec.service_account.automount_token
    if automount is None:
        automount = bool(spec.rbac.rules or spec.rbac.cluster_rules)
    return ResolvedPolicy(
        name=name,
        namespace=str(metadata.get("namespace") or ""),
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
        app=app,
        service_account_name=spec.service_account.name or app,
        automount_token=automount,
        pod_labels=pod_labels,
        spec=spec,
    )
