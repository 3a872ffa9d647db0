"""What only a node shows: tokens a kubelet mounts (or not) inside running containers, cluster DNS, and
NetworkPolicies enforced on real packets by kube-network-policies."""

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from access_hygiene.localcluster.node import API_ADDRESS
from access_hygiene.localcluster.node_images import ImageSpec, write_archive
from tests.node.conftest import NodeCluster
from tests.node.probes import TOKEN_DIR, client_pod, connect, eventually_connect, jwt_claims, run_pods, server_pod

pytestmark = pytest.mark.node


def test_pod_on_default_service_account_has_no_token_inside_when_automount_is_off(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    ns = node_namespace
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        # What the operator's namespace hygiene applies to every namespace's default ServiceAccount.
        core.patch_namespaced_service_account("default", ns, {"automountServiceAccountToken": False})
        core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    run_pods(
        node_cluster, ns,
        client_pod(node_cluster, "app", {"app": "app"}),
        client_pod(node_cluster, "reader", {"app": "reader"}, service_account="reader"),
    )  # fmt: skip
    node = node_cluster.node

    # Inside the running container (its root and mount table as the kernel has them): nothing mounted.
    app_pid = node.container_pid(ns, "app", "app")
    assert not (Path(f"/proc/{app_pid}/root") / TOKEN_DIR).exists()
    assert "serviceaccount" not in Path(f"/proc/{app_pid}/mountinfo").read_text()
    # And as the container's own process sees it.
    inside = node.kubectl(
        "exec", "-n", ns, "app", "--", "/agnhost", "mounttest", f"--file_content=/{TOKEN_DIR}/token", check=False
    )  # fmt: skip
    assert inside.returncode != 0
    assert "no such file or directory" in inside.stdout + inside.stderr

    # The control: a ServiceAccount that leaves automount on gets a token the kubelet requested for it.
    reader_pid = node.container_pid(ns, "reader", "reader")
    token = (Path(f"/proc/{reader_pid}/root") / TOKEN_DIR / "token").read_text()
    assert jwt_claims(token)["sub"] == f"system:serviceaccount:{ns}:reader"
    assert f"/{TOKEN_DIR} " in Path(f"/proc/{reader_pid}/mountinfo").read_text()


def test_pods_resolve_cluster_names_through_coredns(node_cluster: NodeCluster, node_namespace: str) -> None:
    ns = node_namespace
    with node_cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespaced_service(
            ns,
            {
                "metadata": {"name": "echo"},
                "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )
    run_pods(node_cluster, ns, server_pod(node_cluster, "echo", {"app": "echo"}),
             client_pod(node_cluster, "client", {"app": "client"}))  # fmt: skip

    eventually_connect(node_cluster, ns, "client", f"echo.{ns}.svc.cluster.local", 80, "OK")
    assert connect(node_cluster, ns, "client", "echo", 80) == "OK"  # the pod's search path
    assert connect(node_cluster, ns, "client", f"absent.{ns}.svc.cluster.local", 80) == "DNS"
    # The API server through the `kubernetes` Service, by name.
    assert connect(node_cluster, ns, "client", "kubernetes.default.svc.cluster.local", 443) == "OK"


def _apply_policy(cluster: NodeCluster, namespace: str, policy: dict[str, Any]) -> None:
    with cluster.api_client() as api:
        kubernetes.client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, policy)


def test_default_deny_and_an_allow_rule_hold_on_real_packets(node_cluster: NodeCluster, node_namespace: str) -> None:
    ns = node_namespace
    with node_cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespaced_service(
            ns,
            {
                "metadata": {"name": "server"},
                "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )
    ips = run_pods(
        node_cluster, ns,
        server_pod(node_cluster, "server", {"app": "server"}),
        client_pod(node_cluster, "client", {"app": "client"}),
        client_pod(node_cluster, "stranger", {"app": "stranger"}),
    )  # fmt: skip
    server = ips["server"]
    # Before any policy everything connects: a denial later is the policy's doing. Awaited, not probed once: Ready
    # (no readiness probe) says the container started, not that netexec has bound its ports yet.
    for pod in ("client", "stranger"):
        eventually_connect(node_cluster, ns, pod, server, 8080, "OK")
        eventually_connect(node_cluster, ns, pod, server, 8081, "OK", protocol="udp")

    _apply_policy(
        node_cluster, ns,
        {"metadata": {"name": "default-deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    )  # fmt: skip
    eventually_connect(node_cluster, ns, "client", server, 8080, "TIMEOUT")
    assert connect(node_cluster, ns, "stranger", server, 8080) == "TIMEOUT"

    _apply_policy(
        node_cluster, ns,
        {
            "metadata": {"name": "allow-client"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080}]}],
            },
        },
    )  # fmt: skip
    eventually_connect(node_cluster, ns, "client", server, 8080, "OK")
    assert connect(node_cluster, ns, "client", "server", 80) == "OK"  # through the Service (DNAT) as well
    assert connect(node_cluster, ns, "stranger", server, 8080) == "TIMEOUT"
    assert connect(node_cluster, ns, "stranger", "server", 80) == "TIMEOUT"
    # The allow names TCP 8080 only: the same client's UDP to 8081 stays denied.
    assert connect(node_cluster, ns, "client", server, 8081, protocol="udp") == "TIMEOUT"

    with node_cluster.api_client() as api:
        kubernetes.client.NetworkingV1Api(api).delete_namespaced_network_policy("default-deny", ns)
        kubernetes.client.NetworkingV1Api(api).delete_namespaced_network_policy("allow-client", ns)
    eventually_connect(node_cluster, ns, "stranger", server, 8080, "OK")


def test_egress_default_deny_blocks_dns_until_an_allow_to_kube_dns(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    ns = node_namespace
    run_pods(node_cluster, ns, server_pod(node_cluster, "echo", {"app": "echo"}),
             client_pod(node_cluster, "client", {"app": "client"}))  # fmt: skip
    with node_cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespaced_service(
            ns, {"metadata": {"name": "echo"}, "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080}]}}
        )
    # Absolute (trailing dot): one query, not one per search domain, while DNS is denied.
    echo = f"echo.{ns}.svc.cluster.local."
    eventually_connect(node_cluster, ns, "client", echo, 8080, "OK")

    _apply_policy(
        node_cluster, ns,
        {"metadata": {"name": "deny-egress"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}},
    )  # fmt: skip
    eventually_connect(node_cluster, ns, "client", echo, 8080, "DNS", within=60)

    _apply_policy(
        node_cluster, ns,
        {
            "metadata": {"name": "allow-dns"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    }
                ],
            },
        },
    )  # fmt: skip
    # The name resolves again; the connection after it is still denied (egress to echo is not allowed).
    eventually_connect(node_cluster, ns, "client", echo, 8080, "TIMEOUT", within=60)


def test_api_server_is_reachable_from_pods_exactly_where_egress_allows_it(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    ns = node_namespace
    run_pods(node_cluster, ns, client_pod(node_cluster, "client", {"app": "client"}))
    service = "10.96.0.1"  # the `kubernetes` Service; its endpoint is the API server's address, off the node
    assert connect(node_cluster, ns, "client", service, 443) == "OK"

    _apply_policy(
        node_cluster, ns,
        {"metadata": {"name": "deny-egress"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}},
    )  # fmt: skip
    eventually_connect(node_cluster, ns, "client", service, 443, "TIMEOUT")

    # What an AccessPolicy's kubeAPIServer: true renders: the endpoint's address and port, after DNAT.
    _apply_policy(
        node_cluster, ns,
        {
            "metadata": {"name": "allow-api-server"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": f"{API_ADDRESS}/32"}}],
                        "ports": [{"port": node_cluster.control_plane.api_port, "protocol": "TCP"}],
                    }
                ],
            },
        },
    )  # fmt: skip
    eventually_connect(node_cluster, ns, "client", service, 443, "OK")


def test_an_imported_image_runs_without_a_registry(
    node_cluster: NodeCluster, node_namespace: str, tmp_path: Path
) -> None:
    node = node_cluster.node
    assert node.bin_dir is not None
    spec = ImageSpec("localhost/imported-probe:test", {"/probe": node.bin_dir / "agnhost"}, ["/probe"])
    node.import_image(write_archive(spec, tmp_path))
    pod = client_pod(node_cluster, "imported", {"app": "imported"})
    pod["spec"]["containers"][0]["image"] = spec.name
    run_pods(node_cluster, node_namespace, pod)
    assert "io.cri-containerd.pinned=pinned" in node.ctr("images", "list", f"name=={spec.name}").stdout
