"""Installing CustomResourceDefinitions and waiting until they are served."""

import time
from collections.abc import Mapping
from typing import Any

import kubernetes

from access_hygiene.k8s import resources


def install_crd(api: kubernetes.client.ApiClient, crd: Mapping[str, Any], timeout: float = 60.0) -> None:
    resources.apply(api, crd)
    name = str(crd["metadata"]["name"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = resources.get(api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", name) or {}
        conditions = (live.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CustomResourceDefinition {name} not Established after {timeout}s")
