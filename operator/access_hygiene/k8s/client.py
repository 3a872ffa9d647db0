"""Building API clients: kubeconfig (explicit path or $KUBECONFIG) or in-cluster service account."""

import os
from collections.abc import Mapping
from typing import cast

import kubernetes


def make_api_client(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.ApiClient:
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path or context:
        return cast(
            kubernetes.client.ApiClient, kubernetes.config.new_client_from_config(config_file=path, context=context)
        )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)
    return cast(kubernetes.client.ApiClient, kubernetes.config.new_client_from_config())


def in_cluster_server(env: Mapping[str, str]) -> str | None:
    """The API server as a Pod reaches it: the kubelet's KUBERNETES_SERVICE_HOST/PORT, no DNS needed.

    client-go and this client's load_incluster_config read the same variables; kopf's service-account login names
    https://kubernetes.default.svc instead, which fails wherever cluster DNS does not answer.
    """
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def with_pool_size(api: kubernetes.client.ApiClient, size: int) -> kubernetes.client.ApiClient:
    """The same client with room for `size` concurrent connections (workers, long-lived watches)."""
    api.configuration.connection_pool_maxsize = size
    api.rest_client = kubernetes.client.rest.RESTClientObject(api.configuration)
    return api
