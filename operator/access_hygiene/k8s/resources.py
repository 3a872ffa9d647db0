"""Generic object operations over the REST API: server-side apply with one field manager, get, list, delete.

Objects are plain dicts (the API's JSON). Paths come from a small table of the kinds the operator
manages, so no discovery round-trips are needed.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes

from access_hygiene import FIELD_MANAGER

Obj = dict[str, Any]
# (connect, read) seconds: a hung API server must not pin a worker thread forever.
REQUEST_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def base(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(self, namespace: str = "", name: str = "") -> str:
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


_TYPES = [
    ResourceType("v1", "Namespace", "namespaces", False),
    ResourceType("v1", "ServiceAccount", "serviceaccounts", True),
    ResourceType("v1", "Pod", "pods", True),
    ResourceType("v1", "Secret", "secrets", True),
    ResourceType("v1", "ConfigMap", "configmaps", True),
    ResourceType("v1", "Event", "events", True),
    ResourceType("v1", "Endpoints", "endpoints", True),
    ResourceType("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
    ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    ResourceType("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ResourceType("accesshygiene.io/v1alpha1", "AccessPolicy", "accesspolicies", True),
    ResourceType("accesshygiene.io/v1alpha1", "AdmissionParameterSet", "admissionparametersets", False),
    ResourceType("accesshygiene.io/v1alpha1", "AccessEligibility", "accesseligibilities", False),
    ResourceType("accesshygiene.io/v1alpha1", "AccessRequest", "accessrequests", True),
    ResourceType("accesshygiene.io/v1alpha1", "AccessApproval", "accessapprovals", True),
    ResourceType("apps/v1", "Deployment", "deployments", True),
    ResourceType("apps/v1", "ReplicaSet", "replicasets", True),
    ResourceType("apps/v1", "StatefulSet", "statefulsets", True),
    ResourceType("apps/v1", "DaemonSet", "daemonsets", True),
    ResourceType("batch/v1", "Job", "jobs", True),
    ResourceType("batch/v1", "CronJob", "cronjobs", True),
    ResourceType("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", False),
    ResourceType(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        False,
    ),
    ResourceType("admissionregistration.k8s.io/v1", "MutatingAdmissionPolicy", "mutatingadmissionpolicies", False),
    ResourceType(
        "admissionregistration.k8s.io/v1", "MutatingAdmissionPolicyBinding", "mutatingadmissionpolicybindings", False
    ),
]
RESOURCE_TYPES: dict[tuple[str, str], ResourceType] = {(t.api_version, t.kind): t for t in _TYPES}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unsupported kind {api_version}/{kind}") from None


def _type_of(manifest: Mapping[str, Any]) -> ResourceType:
    return resource_type(str(manifest["apiVersion"]), str(manifest["kind"]))


def open_response(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> Any:
    """One REST call; returns the urllib3 response with its body unread (watch streams read it line by line).
    Raises kubernetes ApiException on HTTP errors (and urllib3 errors when the API server cannot be reached)."""
    method_, url, headers, payload, post = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Content-Type": content_type, "Accept": accept},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method_, url, header_params=headers, body=payload, post_params=post, _request_timeout=timeout
    )
    if not 200 <= response.status <= 299:
        response.read()
        raise kubernetes.client.ApiException(http_resp=response)
    return response.response


def request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> Obj:
    """One REST call returning the decoded JSON body (errors as in open_response)."""
    response = open_response(
        api, method, path, query=query, body=body, content_type=content_type, accept=accept, timeout=timeout
    )
    data = response.data
    return dict(json.loads(data)) if data else {}


def apply(
    api: kubernetes.client.ApiClient,
    manifest: Mapping[str, Any],
    *,
    force: bool = True,
    field_manager: str = FIELD_MANAGER,
) -> Obj:
    """Server-side apply with the operator's single field manager (another manager only for what a user's
    tool applies on the user's behalf, such as `local --examples`)."""
    rtype = _type_of(manifest)
    meta = manifest["metadata"]
    path = rtype.path(str(meta.get("namespace") or ""), str(meta["name"]))
    query = {"fieldManager": field_manager, "force": "true" if force else "false"}
    return request(api, "PATCH", path, query=query, body=dict(manifest), content_type="application/apply-patch+yaml")


def create(api: kubernetes.client.ApiClient, manifest: Mapping[str, Any]) -> Obj:
    """POST a new object (for objects that are never updated, such as Events)."""
    rtype = _type_of(manifest)
    namespace = str((manifest.get("metadata") or {}).get("namespace") or "")
    return request(api, "POST", rtype.path(namespace), body=dict(manifest))


def get(api: kubernetes.client.ApiClient, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
    try:
        return request(api, "GET", resource_type(api_version, kind).path(namespace, name))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def list_objects(
    api: kubernetes.client.ApiClient,
    api_version: str,
    kind: str,
    *,
    namespace: str = "",
    label_selector: str = "",
    page_size: int = 500,
    metadata_only: bool = False,
) -> Iterator[Obj]:
    """All objects of a kind (paged), each with apiVersion and kind set."""
    rtype = resource_type(api_version, kind)
    accept = (
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        if metadata_only
        else "application/json"
    )
    token = ""
    while True:
        query = {"limit": str(page_size)}
        if label_selector:
            query["labelSelector"] = label_selector
        if token:
            query["continue"] = token
        page = request(api, "GET", rtype.path(namespace), query=query, accept=accept)
        for item in page.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item["kind"] = kind
            yield item
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return


def delete(
    api: kubernetes.client.ApiClient,
    api_version: str,
    kind: str,
    name: str,
    namespace: str = "",
    uid: str = "",
) -> bool:
    """Delete one object; with uid, only that incarnation (precondition). False when already gone."""
    body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        request(api, "DELETE", resource_type(api_version, kind).path(namespace, name), body=body)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def patch_json(
    api: kubernetes.client.ApiClient,
    api_version: str,
    kind: str,
    name: str,
    operations: list[dict[str, Any]],
    namespace: str = "",
) -> Obj:
    """JSON patch (RFC 6902): precise removals, guarded by `test` operations."""
    path = resource_type(api_version, kind).path(namespace, name)
    return request(api, "PATCH", path, body=operations, content_type="application/json-patch+json")


def patch_merge(
    api: kubernetes.client.ApiClient,
    api_version: str,
    kind: str,
    name: str,
    patch: Mapping[str, Any],
    namespace: str = "",
    subresource: str = "",
) -> Obj:
    path = resource_type(api_version, kind).path(namespace, name)
    if subresource:
        path = f"{path}/{subresource}"
    return request(api, "PATCH", path, body=dict(patch), content_type="application/merge-patch+json")
