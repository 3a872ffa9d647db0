"""What the API server serves (API discovery): apiGroup -> resource names, subresources included.

Aggregated discovery (apidiscovery.k8s.io/v2, two requests: /api and /apis) with a fallback to the
per-group documents for servers without it. ServedResourcesCache keeps the answer for a while and
refreshes early when asked about a name it does not know (a CRD installed a moment ago).
"""

import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import kubernetes

from access_hygiene.k8s.resources import request

Served = dict[str, set[str]]
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


def _from_aggregated(document: dict[str, Any], served: Served) -> None:
    for group in document.get("items") or []:
        names = served.setdefault(str((group.get("metadata") or {}).get("name") or ""), set())
        for version in group.get("versions") or []:
            for resource in version.get("resources") or []:
                name = str(resource.get("resource") or "")
                if not name:
                    continue
                names.add(name)
                names.update(f"{name}/{sub['subresource']}" for sub in resource.get("subresources") or [])


def _from_resource_list(document: dict[str, Any], names: set[str]) -> None:
    names.update(str(r["name"]) for r in document.get("resources") or [] if r.get("name"))


def _legacy(api: kubernetes.client.ApiClient) -> Served:
    served: Served = {"": set()}
    for version in request(api, "GET", "/api").get("versions") or ["v1"]:
        _from_resource_list(request(api, "GET", f"/api/{version}"), served[""])
    for group in request(api, "GET", "/apis").get("groups") or []:
        names = served.setdefault(str(group["name"]), set())
        for version in group.get("versions") or []:
            _from_resource_list(request(api, "GET", f"/apis/{version['groupVersion']}"), names)
    return served


def served_resources(api: kubernetes.client.ApiClient) -> Served:
    """apiGroup ("" for core) -> every resource name served in any version, e.g. "pods", "pods/exec"."""
    served: Served = {}
    for path in ("/api", "/apis"):
        document = request(api, "GET", path, accept=_AGGREGATED)
        if document.get("kind") != "APIGroupDiscoveryList":
            return _legacy(api)
        _from_aggregated(document, served)
    return served


class ServedResourcesCache:
    """served_resources with a time-to-live; `get(api, require=...)` refetches early (at most every
    `min_refresh` seconds) when a required (apiGroup, resource) is missing from the cached answer."""

    def __init__(
        self, max_age: float = 300.0, min_refresh: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age, self.min_refresh, self._clock = max_age, min_refresh, clock
        self._served: Served | None = None
        self._fetched_at = 0.0

    def _known(self, require: Iterable[tuple[str, str]]) -> bool:
        assert self._served is not None
        return all(group == "*" or "*" in resource or resource in self._served.get(group, ())
                   for group, resource in require)  # fmt: skip

    def get(self, api: kubernetes.client.ApiClient, require: Collection[tuple[str, str]] = ()) -> Served:
        age = self._clock() - self._fetched_at
        if (
            self._served is None
            or age > self.max_age
            or (age > self.min_refresh and require and not self._known(require))
        ):
            self._served = served_resources(api)
            self._fetched_at = self._clock()
        return self._served

    def invalidate(self) -> None:
        self._served = None
