"""examples/ enforced by the operator on a real node: every flow the AccessPolicies declare connects, every other
one is dropped, as real packets show (agnhost connect from every pod to every port of every other pod, the API
server, a database-like peer outside the pod network, and DNS). The operator runs in-process (kopf) in enforce
mode; its NetworkPolicies are enforced by kube-network-policies."""

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from access_hygiene.localcluster.node import API_ADDRESS, NODE_IP
from access_hygiene.models.policy import AccessPolicySpec, ResolvedPolicy, resolve_policy
from tests.cluster.conftest import OPERATOR_ENV, running_operator, wait_for
from tests.conftest import CRD_PATH, REPO_ROOT
from tests.node.conftest import NodeCluster
from tests.node.flows import DeclaredFlows, Endpoint, Flow, all_flows
from tests.node.probes import TOKEN_DIR, agnhost_pod, api_status_from_pod, connect, jwt_claims, run_pods
from tests.node.random_specs import random_apps

pytestmark = pytest.mark.node

EXEMPT = ["kube-system", "kube-public", "kube-node-lease", "ingress-nginx"]
NAMESPACES = ["shop", "platform-tools", "ingress-nginx", "outside"]
SERVED = (("http", 8080, "TCP"), ("udp", 8081, "UDP"))
DEFAULT_DENY = "access-hygiene-default-deny"
DB_NETNS, DB_VETH, DB_IP, DB_PORT = "ah-db", "ah-db0", "10.20.0.5", 5432  # inside orders-api's declared ipBlock


@dataclass(frozen=True)
class ProbePod:
    namespace: str
    name: str
    labels: dict[str, str]
    service_account: str | None = None


PODS = [
    ProbePod("shop", "web", {"app.kubernetes.io/name": "web"}, "web"),
    ProbePod("shop", "orders-api", {"app.kubernetes.io/name": "orders-api"}, "orders-api"),
    ProbePod("shop", "stranger", {"app.kubernetes.io/name": "stranger"}),
    ProbePod("platform-tools", "pod-watcher", {"app.kubernetes.io/name": "pod-watcher"}, "pod-watcher-controller"),
    ProbePod("ingress-nginx", "ingress", {"app.kubernetes.io/name": "ingress-nginx"}),
    ProbePod("outside", "outsider", {"app.kubernetes.io/name": "outsider"}),
]


def _example_policies() -> list[dict[str, object]]:
    documents = []
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "AccessPolicy"]
    return documents


@pytest.fixture(scope="module")
def db_peer(node_cluster: NodeCluster) -> Iterator[Endpoint]:
    """A database-like peer outside the pod network: agnhost netexec in a network namespace one veth from the
    host, at an address inside the ipBlock orders-api declares."""
    node = node_cluster.node
    assert node.bin_dir is not None

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    run("ip", "netns", "add", DB_NETNS)
    server = None
    try:
        run("ip", "link", "add", DB_VETH, "type", "veth", "peer", "name", "eth0", "netns", DB_NETNS)
        for command in (["addr", "add", f"{DB_IP}/32", "dev", "eth0"], ["link", "set", "eth0", "up"],
                        ["route", "add", f"{NODE_IP}/32", "dev", "eth0"],
                        ["route", "add", "default", "via", NODE_IP, "dev", "eth0"]):  # fmt: skip
            run("ip", "-n", DB_NETNS, *command)
        run("ip", "link", "set", DB_VETH, "up")
        run("ip", "route", "add", f"{DB_IP}/32", "dev", DB_VETH, "src", NODE_IP)
        server = subprocess.Popen(
            ["ip", "netns", "exec", DB_NETNS, str(node.bin_dir / "agnhost"), "netexec", f"--http-port={DB_PORT}",
             "--udp-port=5433"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def listening() -> bool:
            try:
                socket.create_connection((DB_IP, DB_PORT), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=20)
        yield Endpoint("db", DB_IP, ports=(("postgres", DB_PORT, "TCP"),))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "delete", DB_VETH], capture_output=True)
        subprocess.run(["ip", "netns", "delete", DB_NETNS], capture_output=True)


def _ready(policy: dict[str, Any]) -> bool:
    conditions = (policy.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _automount(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> bool | None:
    try:
        account = core.read_namespaced_service_account(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:  # kube-controller-manager (or the operator's apply) has not created it yet
            return None
        raise
    value: bool | None = account.automount_service_account_token
    return value


def _names(object_list: Any) -> set[str]:
    return {item.metadata.name for item in object_list.items}


def _describe(flow: Flow, declared: bool, observed: bool) -> str:
    return f"{flow}: declared {'allow' if declared else 'deny'}, observed {'open' if observed else 'dropped'}"


@dataclass
class EnforcedExamples:
    cluster: NodeCluster
    pods: dict[str, Endpoint]  # "namespace/name" -> endpoint
    model: DeclaredFlows
    policies: list[ResolvedPolicy]


@pytest.fixture(scope="module")
def enforced_examples(node_cluster: NodeCluster, db_peer: Endpoint) -> Iterator[EnforcedExamples]:
    from access_hygiene.k8s import resources
    from access_hygiene.k8s.crds import install_crd
    from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

    cluster = node_cluster
    with cluster.api_client() as api:
        install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
    env = {**OPERATOR_ENV, "ACCESS_HYGIENE_MODE": "enforce", "ACCESS_HYGIENE_EXEMPT_NAMESPACES": json.dumps(EXEMPT)}
    with running_operator(cluster.control_plane.operator_kubeconfig, env), cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        for namespace in NAMESPACES:
            core.create_namespace({"metadata": {"name": namespace}})
        documents = _example_policies()
        for document in documents:
            namespace = document["metadata"]["namespace"]  # type: ignore[index]
            custom.create_namespaced_custom_object("accesshygiene.io", "v1alpha1", namespace, "accesspolicies",
                                                   document)  # fmt: skip

        def ready_policies() -> list[dict[str, object]] | None:
            live = custom.list_cluster_custom_object("accesshygiene.io", "v1alpha1", "accesspolicies")["items"]
            ready = [p for p in live if _ready(p)]
            return ready if len(ready) == len(documents) else None

        live_policies = wait_for(ready_policies, timeout=60)
        networking = kubernetes.client.NetworkingV1Api(api)
        for namespace in ("shop", "platform-tools", "outside"):
            wait_for(lambda ns=namespace: _names(networking.list_namespaced_network_policy(ns)) & {DEFAULT_DENY})
        for pod in PODS:
            if pod.service_account:
                wait_for(lambda p=pod: p.service_account in _names(core.list_namespaced_service_account(p.namespace)))
        # Namespace hygiene turns automount off on `default` in its own write, apart from the NetworkPolicies and
        # from kube-controller-manager's creation of the account: a pod created before it would get the token
        # test_operator_decides_which_running_pods_hold_a_token says the operator took away.
        for namespace in ("shop", "platform-tools", "outside"):
            wait_for(lambda ns=namespace: _automount(core, ns, "default") is False)

        endpoints: dict[str, Endpoint] = {}
        for namespace in NAMESPACES:
            specs = [
                agnhost_pod(cluster, p.name, p.labels, ["netexec", "--http-port=8080", "--udp-port=8081"],
                            service_account=p.service_account)
                for p in PODS if p.namespace == namespace
            ]  # fmt: skip
            for spec in specs:
                spec["spec"]["containers"][0]["ports"] = [
                    {"name": name, "containerPort": number, "protocol": protocol} for name, number, protocol in SERVED
                ]
            ips = run_pods(cluster, namespace, *specs)
            for p in PODS:
                if p.namespace == namespace:
                    endpoints[f"{namespace}/{p.name}"] = Endpoint(f"{namespace}/{p.name}", ips[p.name], namespace,
                                                                  p.labels, SERVED)  # fmt: skip
        coredns = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items[0]
        endpoints["dns"] = Endpoint("dns", coredns.status.pod_ip, "kube-system", dict(coredns.metadata.labels),
                                    (("dns", 53, "UDP"),))  # fmt: skip
        endpoints["api-server"] = Endpoint("api-server", API_ADDRESS,
                                           ports=(("https", cluster.control_plane.api_port, "TCP"),))  # fmt: skip
        endpoints["db"] = db_peer
        namespace_labels = {ns.metadata.name: dict(ns.metadata.labels or {}) for ns in core.list_namespace().items}
        policies = [
            resolve_policy(p["metadata"], AccessPolicySpec.model_validate(p["spec"]))  # type: ignore[index]
            for p in live_policies
        ]
        model = DeclaredFlows(
            policies=policies,
            namespace_labels=namespace_labels,
            hygiene_namespaces=frozenset(n for n in namespace_labels if n not in EXEMPT),
            dns_namespace="kube-system",
            dns_labels={"k8s-app": "kube-dns"},
            api_server=(API_ADDRESS, cluster.control_plane.api_port),
        )
        yield EnforcedExamples(cluster, endpoints, model, policies)
        for namespace in NAMESPACES:
            core.delete_namespace(namespace, grace_period_seconds=0)


def _observe(cluster: NodeCluster, flow: Flow) -> bool:
    """Did the flow get through? Probes the way a client would: the API server through its Service, DNS by
    resolving a cluster name (a DNS error is the only failure that says the query was dropped)."""
    namespace, pod = (flow.source.namespace or ""), flow.source.name.split("/", 1)[1]
    if flow.target.name == "api-server":
        outcome = connect(cluster, namespace, pod, "10.96.0.1", 443)
    elif flow.target.name == "dns":
        outcome = connect(cluster, namespace, pod, "kubernetes.default.svc.cluster.local.", 443)
    else:
        outcome = connect(cluster, namespace, pod, flow.target.ip, flow.port, protocol=flow.protocol.lower())
    if outcome.startswith("EXEC FAILED"):
        raise AssertionError(f"{flow}: the probe did not run: {outcome}")
    return outcome != "DNS" if flow.target.name == "dns" else outcome == "OK"


def assert_matrix_agrees(cluster: NodeCluster, flows: list[Flow], declared: dict[Flow, bool], title: str) -> None:
    """Probe every flow (6 at a time), print the matrix, fail on any disagreement with what is declared. A flow
    that disagrees is probed again for up to 30 s first (policies and pod IPs reach the enforcer asynchronously)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        observed = dict(zip(flows, pool.map(lambda f: _observe(cluster, f), flows), strict=True))
    disagreements = [f for f in flows if observed[f] != declared[f]]
    deadline = time.monotonic() + 30
    while disagreements and time.monotonic() < deadline:
        time.sleep(2)
        for f in disagreements:
            observed[f] = _observe(cluster, f)
        disagreements = [f for f in disagreements if observed[f] != declared[f]]
    took = time.monotonic() - started

    allowed = sum(declared[f] for f in flows)
    # The operator's kopf runner holds sys.stdout while it runs: write to the real one (shown with -s).
    out = sys.__stdout__
    print(f"\nProbe matrix, {title}: {len(flows)} flows ({allowed} declared, {len(flows) - allowed} not), "
          f"{took:.1f}s, {len(disagreements)} disagreements", file=out)  # fmt: skip
    for f in flows:
        print(("   " if observed[f] == declared[f] else "!! ") + _describe(f, declared[f], observed[f]), file=out)
    assert not disagreements, f"observed connectivity disagrees with the AccessPolicies ({title}):\n" + "\n".join(
        _describe(f, declared[f], observed[f]) for f in disagreements
    )


def test_examples_declared_flows_agree_with_real_packets(enforced_examples: EnforcedExamples) -> None:
    examples, model = enforced_examples, enforced_examples.model
    pods = [e for e in examples.pods.values() if e.is_pod and e.namespace != "kube-system"]
    endpoints = examples.pods
    flows = all_flows(pods, [*pods, endpoints["api-server"], endpoints["db"]])
    flows += [Flow(pod, endpoints["dns"], 53, "UDP") for pod in pods]
    declared = {flow: model.allowed(flow) for flow in flows}

    # The model itself says what the examples say (guards against a model that allows or denies everything).
    def flow(source: str, target: str, port: int, protocol: str = "TCP") -> Flow:
        return Flow(endpoints[source], endpoints[target], port, protocol)

    assert declared[flow("shop/web", "shop/orders-api", 8080)]
    assert declared[flow("ingress-nginx/ingress", "shop/web", 8080)]
    assert declared[flow("shop/orders-api", "db", DB_PORT)]
    assert not declared[flow("shop/web", "db", DB_PORT)]
    assert not declared[flow("shop/stranger", "shop/web", 8080)]
    assert not declared[flow("shop/web", "shop/orders-api", 8081, "UDP")]
    assert declared[flow("platform-tools/pod-watcher", "api-server", examples.cluster.control_plane.api_port)]
    assert not declared[flow("shop/web", "api-server", examples.cluster.control_plane.api_port)]

    # The enforcer has the policies once a declared flow connects and an undeclared one is dropped.
    wait_for(lambda: _observe(examples.cluster, flow("shop/web", "shop/orders-api", 8080)), timeout=60)
    wait_for(lambda: not _observe(examples.cluster, flow("shop/stranger", "shop/web", 8080)), timeout=60)

    assert_matrix_agrees(examples.cluster, flows, declared, "examples/")


def test_operator_decides_which_running_pods_hold_a_token(enforced_examples: EnforcedExamples) -> None:
    """The operator turned automount off on `default` (namespace hygiene) and on the ServiceAccounts of apps that
    declare no RBAC; the kubelet then mounted tokens only into the pods whose policy declares rules."""
    node = enforced_examples.cluster.node
    expected = {
        ("shop", "stranger"): None,  # default ServiceAccount, automount turned off by the operator
        ("shop", "web"): None,  # no rbac declared
        ("shop", "orders-api"): "system:serviceaccount:shop:orders-api",
        ("platform-tools", "pod-watcher"): "system:serviceaccount:platform-tools:pod-watcher-controller",
    }
    for (namespace, pod), subject in expected.items():
        root = Path(f"/proc/{node.container_pid(namespace, pod, pod)}/root")
        token = root / TOKEN_DIR / "token"
        if subject is None:
            assert not token.exists(), f"{namespace}/{pod} has a token"
        else:
            assert jwt_claims(token.read_text())["sub"] == subject


def test_app_pods_can_do_exactly_the_declared_verbs_from_inside(enforced_examples: EnforcedExamples) -> None:
    """From each pod's network with its own token, through the kubernetes Service: what its AccessPolicy declares
    succeeds, everything around it is forbidden."""
    cluster = enforced_examples.cluster
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        for name in ("orders-config", "other-config"):
            core.create_namespaced_config_map("shop", {"metadata": {"name": name}, "data": {"k": "v"}})
    requests = [
        # orders-api: get on one ConfigMap by name, nothing else.
        ("shop", "orders-api", "GET", "/api/v1/namespaces/shop/configmaps/orders-config", 200),
        ("shop", "orders-api", "GET", "/api/v1/namespaces/shop/configmaps/other-config", 403),
        ("shop", "orders-api", "GET", "/api/v1/namespaces/shop/configmaps", 403),
        ("shop", "orders-api", "DELETE", "/api/v1/namespaces/shop/configmaps/orders-config", 403),
        ("shop", "orders-api", "GET", "/api/v1/namespaces/shop/secrets", 403),
        # pod-watcher: pods in its namespace, not elsewhere, no secrets.
        ("platform-tools", "pod-watcher", "GET", "/api/v1/namespaces/platform-tools/pods", 200),
        ("platform-tools", "pod-watcher", "GET", "/api/v1/namespaces/shop/pods", 403),
        ("platform-tools", "pod-watcher", "GET", "/api/v1/namespaces/platform-tools/secrets", 403),
        ("platform-tools", "pod-watcher", "DELETE", "/api/v1/namespaces/platform-tools/pods/pod-watcher", 403),
    ]
    observed = [(ns, pod, method, path, api_status_from_pod(cluster, ns, pod, method, path))
                for ns, pod, method, path, _ in requests]  # fmt: skip
    assert observed == requests


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_random_network_specs_agree_with_real_packets(enforced_examples: EnforcedExamples, seed: int) -> None:
    cluster, namespace = enforced_examples.cluster, f"random-{seed}"
    labels, documents = random_apps(seed, namespace, "ingress-nginx")
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            for document in documents:
                custom.create_namespaced_custom_object("accesshygiene.io", "v1alpha1", namespace, "accesspolicies",
                                                       document)  # fmt: skip

            def ready() -> list[dict[str, Any]] | None:
                live = custom.list_namespaced_custom_object("accesshygiene.io", "v1alpha1", namespace,
                                                            "accesspolicies")["items"]  # fmt: skip
                return live if len(live) == len(documents) and all(_ready(p) for p in live) else None

            live = wait_for(ready, timeout=60) if documents else []
            # The model counts the namespace's default deny (namespace hygiene, a write of its own): awaited like the
            # policies, so the matrix's retries are left for what reaches the enforcer asynchronously.
            networking = kubernetes.client.NetworkingV1Api(api)
            wait_for(lambda: DEFAULT_DENY in _names(networking.list_namespaced_network_policy(namespace)))
            specs = []
            for app, app_labels in labels.items():
                spec = agnhost_pod(cluster, app, app_labels, ["netexec", "--http-port=8080", "--udp-port=8081"])
                spec["spec"]["containers"][0]["ports"] = [
                    {"name": name, "containerPort": number, "protocol": protocol} for name, number, protocol in SERVED
                ]
                specs.append(spec)
            ips = run_pods(cluster, namespace, *specs)
            pods = [Endpoint(f"{namespace}/{app}", ips[app], namespace, labels[app], SERVED) for app in labels]
            endpoints = enforced_examples.pods
            ingress = endpoints["ingress-nginx/ingress"]
            model = dataclasses.replace(
                enforced_examples.model,
                policies=[resolve_policy(p["metadata"], AccessPolicySpec.model_validate(p["spec"])) for p in live],
                namespace_labels={
                    **enforced_examples.model.namespace_labels,
                    namespace: {"kubernetes.io/metadata.name": namespace},
                },
                hygiene_namespaces=enforced_examples.model.hygiene_namespaces | {namespace},
            )
            flows = all_flows([*pods, ingress], [*pods, ingress, endpoints["api-server"]])
            flows += [Flow(pod, endpoints["dns"], 53, "UDP") for pod in pods]
            flows = [f for f in flows if not (f.source is ingress and f.target is endpoints["api-server"])]
            declared = {f: model.allowed(f) for f in flows}
            out = sys.__stdout__
            print(f"\nseed {seed}: {json.dumps([d['spec'] for d in documents], sort_keys=True)}", file=out)
            assert_matrix_agrees(cluster, flows, declared, f"random specs, seed {seed}")
        finally:
            core.delete_namespace(namespace, grace_period_seconds=0)
