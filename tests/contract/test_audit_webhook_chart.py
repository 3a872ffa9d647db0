"""The chart's audit webhook switch (continuous mode): off by default (nothing rendered); on, the operator pod
serves the webhook port with its Secrets mounted, a Service and a NetworkPolicy rule reach it, and the settings
the operator reads from the environment are valid."""

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from scripts.render_chart import helm_template

from access_hygiene.settings import OperatorSettings
from tests.contract.chart import render

pytestmark = pytest.mark.contract

ON = [
    "--set", "auditWebhook.enabled=true",
    "--set", "auditWebhook.tlsSecretName=webhook-tls",
    "--set", "auditWebhook.tokenSecretName=webhook-token",
    "--set", "auditWebhook.clientCASecretName=apiserver-client-ca",
    "--set", "auditWebhook.minWindowSeconds=86400",
    "--set", "auditWebhook.service.clusterIP=10.96.0.50",
]  # fmt: skip


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _pod(docs)["containers"][0]["env"]}


def test_audit_webhook_is_off_by_default(helm: Path) -> None:
    docs = render(helm)
    assert not [d for d in docs if d["metadata"]["name"].endswith("-audit-webhook")]
    assert not [name for name in _env(docs) if "AUDIT_WEBHOOK" in name or "USAGE" in name]
    assert [p["name"] for p in _pod(docs)["containers"][0]["ports"]] == ["metrics", "health"]


def test_audit_webhook_on_serves_the_port_with_its_secrets(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, *ON)
    pod = _pod(docs)
    container = pod["containers"][0]
    assert {"name": "audit-webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"audit-webhook-tls": "webhook-tls", "audit-webhook-token": "webhook-token",
                       "audit-webhook-client-ca": "apiserver-client-ca"}  # fmt: skip
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"].startswith("audit-webhook"))
    env = _env(docs)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.audit_webhook_enabled
    assert settings.audit_webhook_port == 9443
    assert settings.audit_webhook_token_file == "/var/run/access-hygiene/audit-webhook/token/token"
    assert settings.audit_webhook_client_ca_file == "/var/run/access-hygiene/audit-webhook/client-ca/ca.crt"
    assert settings.usage_min_window_seconds == 86400
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    for path in (settings.audit_webhook_cert_file, settings.audit_webhook_key_file, settings.audit_webhook_token_file,
                 settings.audit_webhook_client_ca_file):  # fmt: skip
        assert str(Path(path).parent) in mounted

    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-audit-webhook"))
    assert service["spec"]["clusterIP"] == "10.96.0.50"
    assert service["spec"]["ports"] == [{"name": "audit-webhook", "port": 9443, "targetPort": "audit-webhook",
                                         "protocol": "TCP"}]  # fmt: skip
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert {"ports": [{"port": "audit-webhook", "protocol": "TCP"}]} in policy["spec"]["ingress"]
    for doc in docs:
        if doc["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            kubernetes_validate.validate(doc, "1.36.0", strict=True)


def test_token_only_or_client_ca_only_is_enough(helm: Path) -> None:
    enabled = ["--set", "auditWebhook.enabled=true", "--set", "auditWebhook.tlsSecretName=tls"]
    env = _env(render(helm, *enabled, "--set", "auditWebhook.tokenSecretName=token"))
    assert "ACCESS_HYGIENE_AUDIT_WEBHOOK_CLIENT_CA_FILE" not in env
    assert env["ACCESS_HYGIENE_AUDIT_WEBHOOK_TOKEN_FILE"]
    env = _env(render(helm, *enabled, "--set", "auditWebhook.clientCASecretName=ca"))
    assert "ACCESS_HYGIENE_AUDIT_WEBHOOK_TOKEN_FILE" not in env
    assert env["ACCESS_HYGIENE_AUDIT_WEBHOOK_CLIENT_CA_FILE"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "auditWebhook.enabled=true", "--set", "auditWebhook.tokenSecretName=t"], "tlsSecretName"),
        (["--set", "auditWebhook.enabled=true", "--set", "auditWebhook.tlsSecretName=t"], "needs authentication"),
    ],
)
def test_incomplete_audit_webhook_values_fail_with_a_reason(helm: Path, args: list[str], complaint: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        helm_template(helm, *args)
    assert complaint in failure.value.stderr
