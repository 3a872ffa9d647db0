"""The API calls of `access-hygiene access` (cli/access_cmd.py), made as the user of the kubeconfig: who am I
(SelfSubjectReview), create a request or an approval, revoke, list. Admission judges every write
(render/access_admission.py); errors are the API server's, passed on as AccessApiError with its message."""

import json
from dataclasses import dataclass
from typing import Any

import kubernetes

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.k8s import resources
from access_hygiene.k8s.errors import API_FAILURES, api_error_message

Obj = dict[str, Any]
PLURALS = {"AccessRequest": "accessrequests", "AccessApproval": "accessapprovals"}


class AccessApiError(Exception):
    """An API failure as kubectl shows it: `Error from server (Forbidden): <message>`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"Error from server ({self.reason}): {self.message}" if self.reason else f"error: {self.message}"


def _api_error(error: Exception) -> AccessApiError:
    if isinstance(error, kubernetes.client.ApiException) and error.status:
        try:
            reason = str(json.loads(error.body or "{}").get("reason") or error.reason)
        except ValueError:
            reason = str(error.reason)
        return AccessApiError(reason, api_error_message(error))
    return AccessApiError("", f"the API server is unreachable: {error}")


@dataclass(frozen=True)
class Me:
    username: str
    groups: tuple[str, ...]


def _path(kind: str, namespace: str = "", name: str = "") -> str:
    parts = [f"/apis/{API_GROUP}/{API_VERSION}"]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[kind])
    if name:
        parts.append(name)
    return "/".join(parts)


def whoami(api: kubernetes.client.ApiClient) -> Me:
    """The user the API server authenticates this kubeconfig as (every authenticated user may ask)."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        answer = resources.request(api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review)
    except API_FAILURES as error:
        raise _api_error(error) from None
    info = (answer.get("status") or {}).get("userInfo") or {}
    return Me(str(info.get("username") or ""), tuple(str(g) for g in info.get("groups") or []))


def create(api: kubernetes.client.ApiClient, manifest: Obj) -> Obj:
    namespace = str(manifest["metadata"]["namespace"])
    try:
        return resources.request(api, "POST", _path(str(manifest["kind"]), namespace), body=manifest)
    except API_FAILURES as error:
        raise _api_error(error) from None


def get(api: kubernetes.client.ApiClient, kind: str, namespace: str, name: str) -> Obj:
    try:
        return resources.request(api, "GET", _path(kind, namespace, name))
    except API_FAILURES as error:
        raise _api_error(error) from None


def revoke(api: kubernetes.client.ApiClient, namespace: str, name: str) -> Obj:
    """spec.revoked: true, the one edit admission allows on a request."""
    try:
        return resources.request(
            api,
            "PATCH",
            _path("AccessRequest", namespace, name),
            body={"spec": {"revoked": True}},
            content_type="application/merge-patch+json",
        )
    except API_FAILURES as error:
        raise _api_error(error) from None


def list_requests(api: kubernetes.client.ApiClient, namespace: str = "") -> list[Obj]:
    """AccessRequests of one namespace, or of all ("")."""
    try:
        answer = resources.request(api, "GET", _path("AccessRequest", namespace))
    except API_FAILURES as error:
        raise _api_error(error) from None
    return [dict(item) for item in answer.get("items") or []]


def kubeconfig_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig's (current or given) context, "default" when it names none."""
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig or None)
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), current) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
