"""API discovery against the real API server: what it serves, the legacy path, the cache, and the ceiling's
messages for names it does not serve."""

import uuid
from typing import Any

import kubernetes
import pytest

from access_hygiene.engine.rbac.grant_ceiling import unserved_resources
from access_hygiene.k8s.crds import install_crd
from access_hygiene.k8s.discovery import ServedResourcesCache, _legacy, served_resources
from access_hygiene.models.policy import PolicyRule
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster
OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_served_resources_include_subresources_and_crds(crd_installed: Cluster) -> None:
    with crd_installed.api_client() as api:
        served = served_resources(api)
    assert {"configmaps", "pods", "pods/exec", "pods/log", "serviceaccounts/token", "nodes/proxy"} <= served[""]
    assert {"deployments", "deployments/scale"} <= served["apps"]
    assert {"roles", "clusterrolebindings"} <= served["rbac.authorization.k8s.io"]
    assert {"accesspolicies", "accesspolicies/status"} <= served["accesshygiene.io"]
    assert "configmapz" not in served[""]


def test_aggregated_and_legacy_discovery_agree(crd_installed: Cluster) -> None:
    with crd_installed.api_client() as api:
        assert served_resources(api) == _legacy(api)


def test_typos_get_suggestions_from_the_real_server(crd_installed: Cluster) -> None:
    with crd_installed.api_client() as api:
        served = served_resources(api)
    rule = PolicyRule.model_validate({"resources": ["configmapz", "pods/exce", "configmaps"], "verbs": ["get"]})
    assert [reason for _, _, reason in unserved_resources(rule, served)] == [
        "resource 'configmapz' is not served by the API server (did you mean configmaps?)",
        "resource 'pods/exce' is not served by the API server (did you mean pods/exec?)",
    ]


def test_cache_refreshes_early_for_a_name_it_does_not_know(cluster: Cluster) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": OPEN}}],
        },
    }  # fmt: skip
    now = [0.0]
    cache = ServedResourcesCache(max_age=300, min_refresh=5, clock=lambda: now[0])
    with cluster.api_client() as api:
        before = cache.get(api)
        assert group not in before
        install_crd(api, crd)
        try:
            now[0] = 1.0  # younger than min_refresh: the cached answer stands
            assert group not in cache.get(api, require={(group, "widgets")})
            now[0] = 10.0  # older than min_refresh, and a required name is missing: refetched
            assert "widgets" in cache.get(api, require={(group, "widgets")})[group]
            now[0] = 20.0  # everything required is known: no refetch needed, same answer object
            assert cache.get(api, require={(group, "widgets")}) is cache.get(api)
        finally:
            extensions: Any = kubernetes.client.ApiextensionsV1Api(api)
            extensions.delete_custom_resource_definition(f"widgets.{group}")
