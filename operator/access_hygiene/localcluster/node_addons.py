"""The node's add-ons as manifests: CoreDNS (the kube-dns Service at a fixed ClusterIP) and kube-network-policies,
the NetworkPolicy enforcer (a hostNetwork DaemonSet, as its install.yaml and kind run it)."""

from typing import Any

CLUSTER_DOMAIN = "cluster.local"
DNS_SERVICE_IP = "10.96.0.10"
NFQUEUE_ID = 100

COREFILE = f""".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    cache 30
    loop
    reload
    loadbalance
}}
"""


def render_addons(images: dict[str, str], knp_metrics_port: int) -> list[dict[str, Any]]:
    """CoreDNS (as kubeadm deploys it, without forwarding: nothing outside the machine) and kube-network-policies
    (as its install.yaml, with the local image, NRI off and metrics on loopback)."""
    system = "kube-system"
    coredns_labels = {"k8s-app": "kube-dns"}
    knp_labels = {"app": "kube-network-policies", "k8s-app": "kube-network-policies"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": system}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": system}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": system},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": system, "labels": coredns_labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": coredns_labels},
                "template": {
                    "metadata": {"labels": coredns_labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": images["coredns"],
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                ],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "initialDelaySeconds": 10,
                                },
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": system,
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": coredns_labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kube-network-policies", "namespace": system},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kube-network-policies"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kube-network-policies"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kube-network-policies",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "kube-network-policies", "namespace": system}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-network-policies", "namespace": system, "labels": knp_labels},
            "spec": {
                "selector": {"matchLabels": {"app": "kube-network-policies"}},
                "template": {
                    "metadata": {"labels": knp_labels},
                    "spec": {
                        "hostNetwork": True,
                        "serviceAccountName": "kube-network-policies",
                        "priorityClassName": "system-node-critical",
                        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "kube-network-policies",
                                "image": images["kube-network-policies"],
                                "imagePullPolicy": "Never",
                                "args": [
                                    "--hostname-override=$(MY_NODE_NAME)",
                                    "--v=2",
                                    "--disable-nri",
                                    # kernels >= 6.12 have the conntrack fix this workaround is for.
                                    "--netfilter-bug-1766-fix=false",
                                    f"--metrics-bind-address=127.0.0.1:{knp_metrics_port}",
                                    f"--nfqueue-id={NFQUEUE_ID}",
                                ],
                                "env": [
                                    {"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                                ],
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                                "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
                            }
                        ],
                    },
                },
            },
        },
    ]
