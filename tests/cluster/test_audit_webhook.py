"""Continuous mode on the real control plane: kube-apiserver's audit webhook backend posts to the operator.

The module starts its own control plane with `--audit-webhook-config-file` pointing at the operator's receiver
(token and client certificate, see localcluster/controlplane.py), and the operator in-process with a tiny
observation window. A workload authenticated as its ServiceAccount (token from TokenRequest), bound to `edit`,
reads only ConfigMaps: its AccessPolicy's `status.unusedRules` and `access_hygiene_unused_grants` then name the
rest of `edit` and not what it used; a bound ServiceAccount that made no request gets nothing. A wrong token is
refused (401) and counted, a malformed body gets 400 and the operator keeps receiving. `access-hygiene local
--audit-webhook` wires the same path end to end.
"""

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import AuditWebhookEndpoint, free_port
from tests.cluster.conftest import OPERATOR_ENV, cluster_role_grants, running_operator, wait_for
from tests.cluster.test_usage_suggest import bind_edit, sa_token
from tests.conftest import CRD_PATH, REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "accesshygiene.io", "v1alpha1", "accesspolicies"
MIN_WINDOW_SECONDS = 3


@pytest.fixture(scope="module")
def webhook_cluster() -> Iterator[Cluster]:
    with ControlPlane(audit_webhook=True) as control_plane:
        yield Cluster(control_plane)


@pytest.fixture(scope="module")
def webhook(webhook_cluster: Cluster) -> AuditWebhookEndpoint:
    assert webhook_cluster.control_plane.webhook is not None
    return webhook_cluster.control_plane.webhook


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Found free just before the operator binds it: a port found at import stays unbound for minutes, time enough
    for another process of the session (a control plane's own free_port) to take it."""
    return free_port()


@pytest.fixture(scope="module")
def continuous_operator(
    webhook_cluster: Cluster, webhook: AuditWebhookEndpoint, metrics_port: int
) -> Iterator[KopfRunner]:
    from access_hygiene.k8s import resources
    from access_hygiene.k8s.crds import install_crd
    from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

    with webhook_cluster.api_client() as api:
        install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
    env = {
        **OPERATOR_ENV,
        **webhook.operator_env(),
        "ACCESS_HYGIENE_METRICS_PORT": str(metrics_port),
        "ACCESS_HYGIENE_USAGE_MIN_WINDOW_SECONDS": str(MIN_WINDOW_SECONDS),
        "ACCESS_HYGIENE_USAGE_INTERVAL_SECONDS": "0.5",
    }
    with running_operator(webhook_cluster.control_plane.operator_kubeconfig, env) as runner:
        yield runner


def metrics_text(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def metric_value(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


def policy_status(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(body.get("status") or {})


def create_policy(api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"serviceAccount": {"name": name}},
    }
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def post(webhook: AuditWebhookEndpoint, body: bytes, token: str, client_cert: bool = True) -> int:
    context = ssl.create_default_context(cafile=str(webhook.ca_cert))
    if client_cert:
        context.load_cert_chain(str(webhook.certs.client_cert), str(webhook.certs.client_key))
    connection = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=context, timeout=10)
    try:
        connection.request(
            "POST", "/audit", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )
        return connection.getresponse().status
    finally:
        connection.close()


def test_unused_grants_of_a_configmap_reader_reach_status_and_metrics(
    continuous_operator: KopfRunner, webhook_cluster: Cluster, metrics_port: int
) -> None:
    namespace = "shop"
    with webhook_cluster.api_client() as admin:
        core = kubernetes.client.CoreV1Api(admin)
        core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}})
        for sa in ("reader", "idle"):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
            bind_edit(admin, namespace, sa)
            create_policy(admin, namespace, sa)
        granted = cluster_role_grants(admin, "edit")
        # The workload: reads its ConfigMap and lists ConfigMaps, as its ServiceAccount; nothing else.
        with webhook_cluster.client_for_token(sa_token(admin, namespace, "reader")) as app:
            reader = kubernetes.client.CoreV1Api(app)
            reader.read_namespaced_config_map("settings", namespace)
            reader.list_namespaced_config_map(namespace)

        status = wait_for(
            lambda: (found := policy_status(admin, namespace, "reader")).get("unusedRules") and found, timeout=60
        )
        rules = status["unusedRules"]
        assert {(r["binding"]["kind"], r["binding"]["name"], r["role"]["name"]) for r in rules} == {
            ("RoleBinding", "reader-too-wide", "edit")
        }
        unused = {(r["apiGroup"], resource, verb) for r in rules for resource in r["resources"] for verb in r["verbs"]}
        used = {("", "configmaps", "get"), ("", "configmaps", "list")}
        assert used <= granted
        assert ("", "secrets", "create") in unused
        assert ("", "pods", "delete") in unused
        assert unused == granted - used  # everything else of edit, and nothing it used

        # The metric says the same; the idle ServiceAccount (bound, no request) is never judged.
        def scrape_with_reader() -> str | None:
            text = metrics_text(metrics_port)
            found = metric_value(text, "access_hygiene_unused_grants", namespace=namespace, serviceaccount="reader")
            return text if found else None

        text = wait_for(scrape_with_reader)
        value = metric_value(text, "access_hygiene_unused_grants", namespace=namespace, serviceaccount="reader")
        assert value == len(granted - used)
        assert metric_value(text, "access_hygiene_unused_grants", namespace=namespace, serviceaccount="idle") is None
        assert (metric_value(text, "access_hygiene_usage_subjects", state="judged") or 0) >= 1
        assert (metric_value(text, "access_hygiene_audit_events_total", result="recorded") or 0) >= 2
        assert "unusedRules" not in policy_status(admin, namespace, "idle")

        # Using one more grant removes it from the status at the next judgement (a merge patch, only on change).
        with webhook_cluster.client_for_token(sa_token(admin, namespace, "reader")) as app:
            kubernetes.client.CoreV1Api(app).list_namespaced_pod(namespace)
        wait_for(
            lambda: all(
                "pods" not in r["resources"] or "list" not in r["verbs"]
                for r in policy_status(admin, namespace, "reader").get("unusedRules", [])
            ),
            timeout=30,
        )
        assert "unusedRules" not in policy_status(admin, namespace, "idle")

        # Settled: further judgements (every 0.5 s) and the policy sync (drift every 2 s) write nothing.
        custom = kubernetes.client.CustomObjectsApi(admin)
        settled = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "reader")
        time.sleep(3)
        again = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "reader")
        assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
        assert again["status"]["unusedRules"]
        assert again["status"]["conditions"]


def test_wrong_token_and_malformed_bodies_are_refused_and_counted(
    continuous_operator: KopfRunner, webhook: AuditWebhookEndpoint, metrics_port: int
) -> None:
    before = metrics_text(metrics_port)
    refused = metric_value(before, "access_hygiene_audit_webhook_requests_total", code="401") or 0
    invalid = metric_value(before, "access_hygiene_audit_events_total", result="invalid") or 0
    event_list = {"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": []}

    assert post(webhook, json.dumps(event_list).encode(), token="not-the-token") == 401
    assert post(webhook, b'{"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": [', webhook.token) == 400
    other_version = {**event_list, "apiVersion": "audit.k8s.io/v1beta1"}
    assert post(webhook, json.dumps(other_version).encode(), webhook.token) == 400
    broken_item = {**event_list, "items": [{"stage": "ResponseComplete"}, "not an event"]}
    assert post(webhook, json.dumps(broken_item).encode(), webhook.token) == 200  # counted, not retried
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        post(webhook, json.dumps(event_list).encode(), webhook.token, client_cert=False)  # no client certificate

    after = metrics_text(metrics_port)
    assert metric_value(after, "access_hygiene_audit_webhook_requests_total", code="401") == refused + 1
    assert (metric_value(after, "access_hygiene_audit_events_total", result="invalid") or 0) == invalid + 4
    assert post(webhook, json.dumps(event_list).encode(), webhook.token) == 200  # still receiving


def test_local_audit_webhook_wires_the_api_server_to_the_operator(tmp_path: Path) -> None:
    """`access-hygiene local --audit-webhook`: its kube-apiserver posts to its operator, which judges a workload."""
    workdir, log, metrics_port = tmp_path / "local", tmp_path / "local.log", free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator"), "ACCESS_HYGIENE_USAGE_INTERVAL_SECONDS": "1"}
    command = [sys.executable, "-m", "access_hygiene.cli.main", "local", "--workdir", str(workdir),
               "--audit-webhook", "--usage-min-window", "1", "--mode", "audit",
               "--metrics-port", str(metrics_port), "--liveness", ""]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
        try:
            wait_for(lambda: process.poll() is not None or "reacting to events" in log.read_text(), timeout=120)
            assert process.poll() is None, log.read_text()[-3000:]
            assert "audit webhook: https://127.0.0.1:" in log.read_text()
            api = kubernetes.config.new_client_from_config(config_file=str(workdir / "kubeconfig"))
            with api:
                kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
                    "default", {"metadata": {"name": "app"}}
                )
                bind_edit(api, "default", "app")
                server = json.loads((workdir / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
                token_kubeconfig = workdir / "app.kubeconfig"
                token_kubeconfig.write_text(json.dumps({
                    "apiVersion": "v1", "kind": "Config",
                    "clusters": [{"name": "l", "cluster": {"server": server,
                                                           "certificate-authority": str(workdir / "pki" / "ca.crt")}}],
                    "users": [{"name": "app", "user": {"token": sa_token(api, "default", "app")}}],
                    "contexts": [{"name": "l", "context": {"cluster": "l", "user": "app"}}], "current-context": "l",
                }))  # fmt: skip
                with kubernetes.config.new_client_from_config(config_file=str(token_kubeconfig)) as app:
                    kubernetes.client.CoreV1Api(app).list_namespaced_config_map("default")

            def unused() -> float | None:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                return metric_value(text, "access_hygiene_unused_grants", namespace="default", serviceaccount="app")

            assert wait_for(unused, timeout=60) > 100  # the rest of edit: about 400 (verb, resource) pairs
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]
