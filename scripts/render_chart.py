"""Generates the chart's derived files and the kubectl manifests from their sources of truth.

- helm/access-hygiene/values.schema.json  <- values_schema() below (strict: unknown keys fail)
- helm/access-hygiene/templates/crd-accesspolicies.yaml  <- access_hygiene.models.crd.build_crd()
- helm/access-hygiene/templates/crd-admissionparametersets.yaml  <- render/admission_parameters.parameters_crd()
- helm/access-hygiene/templates/crd-openreports.yaml  <- crds/openreports.io_*.yaml (scripts/openreports_crds.py)
- helm/access-hygiene/templates/crd-access<kinds>.yaml  <- build_crd() of each just-in-time access kind
- helm/access-hygiene/templates/access-admission.yaml  <- access_hygiene.render.access_admission
- deploy/access-hygiene.yaml  <- `helm template` of the chart with default values

Run `python scripts/render_chart.py` after changing the chart or the models; `--check` only
reports drift (exit 1). Contract tests in tests/contract/test_chart.py fail on the same drift.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "access-hygiene"
SCHEMA_PATH = CHART / "values.schema.json"
CRD_TEMPLATE_PATH = CHART / "templates" / "crd-accesspolicies.yaml"
PARAMETERS_CRD_TEMPLATE_PATH = CHART / "templates" / "crd-admissionparametersets.yaml"
REPORT_CRDS_TEMPLATE_PATH = CHART / "templates" / "crd-openreports.yaml"
ACCESS_ADMISSION_TEMPLATE_PATH = CHART / "templates" / "access-admission.yaml"
REPORT_CRD_FILES = ("openreports.io_reports.yaml", "openreports.io_clusterreports.yaml")
DEPLOY_PATH = ROOT / "deploy" / "access-hygiene.yaml"
RELEASE = "access-hygiene"
NAMESPACE = "access-hygiene"
KUBE_VERSION = "1.36.3"
HELM_CACHE = Path.home() / ".cache" / "access-hygiene" / "k8s-v1.36.3-etcd-v3.6.8-helm-v3.22.0" / "bin"

Schema = dict[str, Any]

# --- schema building blocks -------------------------------------------------------------------


def with_deprecated(schema: Schema, **deprecated: Schema) -> Schema:
    """A closed object that still accepts (optional, never required) keys earlier releases had."""
    schema["properties"].update(deprecated)
    return schema


def closed(properties: dict[str, Schema], description: str = "") -> Schema:
    """An object whose keys are exactly `properties` (all of them required: values.yaml has them)."""
    schema: Schema = {
        "type": "object",
        "additionalProperties": False,
        "required": sorted(properties),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    return schema


def optional_keys(properties: dict[str, Schema], description: str = "") -> Schema:
    """A closed object whose keys may be left out (Kubernetes-shaped values like resources)."""
    schema = closed(properties, description)
    del schema["required"]
    return schema


def string(description: str = "", **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def boolean(description: str = "") -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def integer(description: str = "", minimum: int = 0, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    if description:
        schema["description"] = description
    return schema


def string_list(description: str = "", item: Schema | None = None) -> Schema:
    return {
        "type": "array",
        "items": item or {"type": "string"},
        **({"description": description} if description else {}),
    }


def string_map(description: str = "") -> Schema:
    return {
        "type": "object",
        "additionalProperties": {"type": "string"},
        **({"description": description} if description else {}),
    }


def passthrough(description: str) -> Schema:
    """A Kubernetes-native object passed to the API server as is; the API server validates it."""
    return {"type": "object", "description": description}


DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
QUANTITY = {"anyOf": [{"type": "string", "pattern": r"^[0-9.]+[a-zA-Z]*$"}, {"type": "number", "minimum": 0}]}
RESOURCE_LIST = optional_keys({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY})
POLICY_RULE = optional_keys(
    {
        "apiGroups": string_list(),
        "resources": string_list(),
        "resourceNames": string_list(),
        "nonResourceURLs": string_list(),
        "verbs": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "An rbac.authorization.k8s.io/v1 PolicyRule.",
)
POLICY_RULE["required"] = ["verbs"]

# The schema paths whose objects stay open on purpose; the contract test allows exactly these.
PASSTHROUGH_PATHS = frozenset(
    {
        "affinity",
        "podSecurityContext",
        "containerSecurityContext",
        "tolerations[]",
        "extraEnv[]",
        "networkPolicy.metricsFrom[]",
        "auditWebhook.from[]",
    }
)


def values_schema() -> Schema:
    """The source of truth for values.schema.json."""
    properties: dict[str, Schema] = {
        "nameOverride": string("Override the chart name."),
        "fullnameOverride": string("Override the full object name prefix."),
        "commonLabels": string_map("Labels on every object."),
        "crds": closed(
            {
                "install": boolean("Install the AccessPolicy and AdmissionParameterSet CRDs."),
                "keep": boolean("Keep the CRDs on uninstall (helm.sh/resource-policy: keep)."),
            }
        ),
        "image": closed(
            {
                "repository": string("Image repository.", minLength=1),
                "tag": string("Image tag; empty means appVersion."),
                "digest": string("Image digest; wins over the tag.", pattern=r"^(sha256:[a-f0-9]{64})?$"),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": string_list("Names of image pull Secrets.", DNS_LABEL),
        "mode": {"enum": ["audit", "enforce"], "description": "Default mode."},
        "exemptions": closed(
            {
                "namespaces": string_list("Namespaces the operator never changes.", DNS_LABEL),
                "namespaceSelector": closed({"matchLabels": string_map("Exempt namespaces carry all these labels.")}),
            }
        ),
        "privilegedNamespaces": string_list("Namespaces where privileged workloads are expected.", DNS_LABEL),
        "grantCeiling": closed(
            {
                "create": boolean("Create the grant ceiling ClusterRole."),
                "name": string("Grant ceiling ClusterRole name.", minLength=1, maxLength=253),
                "rules": {"type": "array", "items": POLICY_RULE, "description": "Grant ceiling rules."},
                "allowedSensitiveCapabilities": string_list("Sensitive capabilities policies may request."),
            }
        ),
        "rbac": closed({"clusterRules": closed({"enabled": boolean("Allow spec.rbac.clusterRules.")})}),
        "secretMetadata": closed({"enabled": boolean("List Secret metadata (grants list/watch on Secrets).")}),
        "admission": with_deprecated(
            closed(
                {
                    "enabled": boolean("Install native admission policies compiled from the rule catalogue."),
                    "roleCapabilities": {
                        "enum": ["warn", "deny", "off"],
                        "description": "Role-capabilities profile: warn everywhere, deny in enforce namespaces, "
                        "or off.",
                    },
                }
            ),
            refreshSeconds=integer(
                "Deprecated, ignored: admission parameters follow events, nothing refreshes on a period. Still "
                "accepted so values files that set it keep validating on upgrade.",
                minimum=1,
            ),
        ),
        "auditWebhook": closed(
            {
                "enabled": boolean(
                    "Serve the audit webhook (continuous mode: status.unusedRules, unused-grant metrics)."
                ),
                "port": PORT,
                "tlsSecretName": string("Secret with tls.crt and tls.key (required when enabled)."),
                "tokenSecretName": string("Secret with the bearer token (key `token`)."),
                "clientCASecretName": string("Secret with the client CA (key ca.crt)."),
                "minWindowSeconds": integer("Seconds a ServiceAccount is observed before a grant is called unused."),
                "intervalSeconds": integer("Seconds between judgements.", minimum=1),
                "maxSubjects": integer("ServiceAccounts whose usage is kept.", minimum=1),
                "maxKeysPerSubject": integer("Distinct requests kept per ServiceAccount.", minimum=1),
                "maxBodyBytes": integer("Largest request body accepted.", minimum=1024),
                "service": closed(
                    {
                        "type": {"enum": ["ClusterIP", "NodePort"]},
                        "clusterIP": string("Fixed cluster IP; empty means allocated."),
                        "nodePort": integer("Node port (0: allocated).", maximum=65535),
                    }
                ),
                "from": {"type": "array", "items": passthrough("A NetworkPolicyPeer.")},
            }
        ),
        "dns": closed(
            {
                "namespace": {**DNS_LABEL, "description": "Namespace of the cluster DNS pods."},
                "podLabels": string_map("Labels of the cluster DNS pods."),
            }
        ),
        "namespaceSummary": boolean("Write the hygiene-summary annotation on namespaces."),
        "reports": closed(
            {
                "enabled": boolean("Write findings as OpenReports Report/ClusterReport objects."),
                "maxResults": integer("Results per report (the summary counts all).", minimum=1, maximum=5000),
                "crds": closed(
                    {
                        "install": boolean("Install the openreports.io CRDs when the cluster lacks them."),
                        "keep": boolean("Keep the openreports.io CRDs on uninstall."),
                    }
                ),
            }
        ),
        "intervals": closed(
            {
                "driftSeconds": integer("Seconds between re-checks from the watch cache.", minimum=1),
                "resyncSeconds": integer("Seconds between full relists of every watched kind.", minimum=60),
            }
        ),
        "metrics": closed(
            {
                "port": PORT,
                "detailed": boolean("Per-subject and per-finding series."),
                "service": closed(
                    {
                        "enabled": boolean("Create the metrics Service."),
                        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "annotations": string_map(),
                    }
                ),
                "serviceMonitor": closed(
                    {
                        "enabled": boolean("Create a ServiceMonitor."),
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "labels": string_map(),
                    }
                ),
                "prometheusRule": closed({"enabled": boolean("Create a PrometheusRule."), "labels": string_map()}),
            }
        ),
        "dashboard": closed(
            {
                "enabled": boolean("Create the Grafana dashboard ConfigMap."),
                "labels": string_map(),
                "annotations": string_map(),
            }
        ),
        "health": closed({"port": PORT}),
        "verbose": boolean("kopf --verbose."),
        "replicaCount": integer("Operator replicas: one leads (writes), the others stand by warm.", minimum=1),
        "leaderElection": closed(
            {
                "enabled": boolean("Elect a leader on a Lease (required for replicaCount > 1)."),
                "leaseName": string("Lease name in the release namespace; empty means the full name."),
                "leaseDurationSeconds": integer("How long a standby waits for an unrenewed Lease.", minimum=1),
                "renewDeadlineSeconds": integer("A leader that cannot renew this long stops writing.", minimum=1),
                "retryPeriodSeconds": integer("Seconds between renewals and attempts.", minimum=1),
            },
            "Leader election (docs/ha.md): client-go's defaults 15/10/2.",
        ),
        "podDisruptionBudget": closed(
            {
                "enabled": boolean("A PodDisruptionBudget when replicaCount > 1."),
                "minAvailable": integer("Replicas a voluntary disruption leaves running.", minimum=1),
            }
        ),
        "serviceAccount": closed(
            {"name": string("ServiceAccount name; empty means the full name."), "annotations": string_map()}
        ),
        "podAnnotations": string_map(),
        "podLabels": string_map(),
        "resources": optional_keys({"requests": RESOURCE_LIST, "limits": RESOURCE_LIST}),
        "podSecurityContext": passthrough("A PodSecurityContext."),
        "containerSecurityContext": passthrough("A SecurityContext."),
        "nodeSelector": string_map(),
        "tolerations": {"type": "array", "items": passthrough("A Toleration.")},
        "affinity": passthrough("An Affinity."),
        "priorityClassName": string(),
        "extraEnv": {"type": "array", "items": passthrough("An EnvVar.")},
        "networkPolicy": closed(
            {
                "enabled": boolean("Create the operator's NetworkPolicy."),
                "apiServer": closed(
                    {
                        "cidrs": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "ports": {"type": "array", "items": PORT, "minItems": 1},
                    }
                ),
                "metricsFrom": {"type": "array", "items": passthrough("A NetworkPolicyPeer.")},
            }
        ),
    }
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "access-hygiene chart values",
            **closed(properties)}  # fmt: skip


def render_values_schema() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


# --- the CRD template ---------------------------------------------------------------------------

_CRD_METADATA = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %s
  labels:
    {{- include "access-hygiene.labels" . | nindent 4 }}
  {{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
"""


def _crd_template(crd: dict[str, Any], source: str, condition: str) -> str:
    """A CRD of ours as a chart template: rendered when crds.install and `condition` hold, kept on uninstall
    when crds.keep."""
    name = crd["metadata"]["name"]
    body = yaml.safe_dump({"spec": crd["spec"]}, sort_keys=False, width=120)
    if "{{" in body or "}}" in body:  # would be read as template actions
        raise ValueError(f"the generated CRD {name} contains '{{{{' or '}}}}'; escape it before templating")
    head = "{{- /* Generated by scripts/render_chart.py from " + source + ". Do not edit. */ -}}\n"
    head += "{{- if and .Values.crds.install " + condition + " }}\n"
    return head + _CRD_METADATA % name + body + "{{- end }}\n"


def _owned_or_absent_crd(name: str) -> str:
    return (
        '(include "access-hygiene.ownedOrAbsent" (dict "root" . '
        f'"apiVersion" "apiextensions.k8s.io/v1" "kind" "CustomResourceDefinition" "name" "{name}"))'
    )


def render_crd_template() -> str:
    from access_hygiene.models.crd import build_crd

    return _crd_template(build_crd(), "access_hygiene.models", '(include "access-hygiene.rendersCRD" .)')


# The admission parameters' kind is installed with the chart whether admission is on or not: kube-apiserver
# resolves a new kind at admission only ~30 s after it is served (access_hygiene/k8s/admission.py), and switching
# admission on later should not wait for that.
def render_parameters_crd_template() -> str:
    from access_hygiene.render.admission_parameters import parameters_crd

    crd = parameters_crd()
    source = "access_hygiene.render.admission_parameters"
    return _crd_template(crd, source, _owned_or_absent_crd(crd["metadata"]["name"]))


def access_crd_template_paths() -> dict[str, Path]:
    """CRD name -> its chart template, for each just-in-time access kind."""
    from access_hygiene.models.crd import ACCESS_KINDS

    return {d.crd_name: CHART / "templates" / f"crd-{d.plural}.yaml" for d in ACCESS_KINDS}


def render_access_crd_template(crd_name: str) -> str:
    from access_hygiene.models.crd import ACCESS_KINDS, build_crd

    crd = build_crd(next(d for d in ACCESS_KINDS if d.crd_name == crd_name))
    return _crd_template(crd, "access_hygiene.models", _owned_or_absent_crd(crd_name))


# The operator's user name, filled in by Helm: only the operator writes AccessRequest status.
_OPERATOR_USERNAME_PLACEHOLDER = "system:serviceaccount:NAMESPACE:SERVICEACCOUNT"
_OPERATOR_USERNAME_TEMPLATE = (
    'system:serviceaccount:{{ .Release.Namespace }}:{{ include "access-hygiene.serviceAccountName" . }}'
)


def render_access_admission_template() -> str:
    """The just-in-time access admission policies: always installed (they guard the JIT kinds themselves)."""
    from access_hygiene.render.access_admission import creator_stamp_policy, render_access_admission

    parts = [
        "{{- /* Generated by scripts/render_chart.py from access_hygiene.render.access_admission. Do not edit. */ -}}\n"
        "{{- /* Just-in-time access admission (docs/just-in-time-access.md): always on, whatever admission.enabled\n"
        "says. Each object only when absent or this release's: the operator applies the same ones at start when it\n"
        "may (`access-hygiene local`), and Helm cannot take those over. */ -}}\n"
    ]
    for document in render_access_admission(_OPERATOR_USERNAME_PLACEHOLDER):
        body = yaml.safe_dump(document, sort_keys=False, width=120)
        if "{{" in body or "}}" in body:
            raise ValueError("the access admission policies contain '{{' or '}}'; escape them before templating")
        kind, name = document["kind"], document["metadata"]["name"]
        guard = (
            '(include "access-hygiene.ownedOrAbsent" (dict "root" . '
            f'"apiVersion" "{document["apiVersion"]}" "kind" "{kind}" "name" "{name}"))'
        )
        parts += ["{{- if " + guard + " }}\n---\n", body, "{{- end }}\n"]
    # The creator stamp JIT leftovers are attributed by: MutatingAdmissionPolicy v1 is served from 1.36 on.
    for document in creator_stamp_policy(_OPERATOR_USERNAME_PLACEHOLDER):
        body = yaml.safe_dump(document, sort_keys=False, width=120)
        if "{{" in body or "}}" in body:
            raise ValueError("the creator stamp policy contains '{{' or '}}'; escape it before templating")
        kind, name = document["kind"], document["metadata"]["name"]
        served = f'(.Capabilities.APIVersions.Has "{document["apiVersion"]}/{kind}")'
        guard = (
            f'and {served} (include "access-hygiene.ownedOrAbsent" (dict "root" . '
            f'"apiVersion" "{document["apiVersion"]}" "kind" "{kind}" "name" "{name}"))'
        )
        parts += ["{{- if " + guard + " }}\n---\n", body, "{{- end }}\n"]
    return "".join(parts).replace(_OPERATOR_USERNAME_PLACEHOLDER, _OPERATOR_USERNAME_TEMPLATE)


# The OpenReports CRDs are shared with other tools (Kyverno, Policy Reporter): render one only when the
# cluster lacks it or this release installed it (`helm template` cannot look up, so it renders both).
_REPORT_CRD_HEAD = """\
{{- $%(var)s := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "%(name)s" }}
{{- if or (not $%(var)s) (eq (dig "metadata" "annotations" "meta.helm.sh/release-name" "" $%(var)s) .Release.Name) }}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %(name)s
  labels:
    {{- include "access-hygiene.labels" . | nindent 4 }}
  annotations:
    accesshygiene.io/copied-from: %(source)s
    {{- if .Values.reports.crds.keep }}
    helm.sh/resource-policy: keep
    {{- end }}
"""


def render_report_crds_template() -> str:
    parts = [
        "{{- /* Generated by scripts/render_chart.py from crds/openreports.io_*.yaml. Do not edit. */ -}}\n",
        "{{- if and .Values.reports.enabled .Values.reports.crds.install }}\n",
    ]
    for name in REPORT_CRD_FILES:
        text = (ROOT / "crds" / name).read_text()
        crd = yaml.safe_load(text)
        source = text.split()[4]  # "# Copied verbatim from <module>@<version> ..." (scripts/openreports_crds.py)
        body = yaml.safe_dump({"spec": crd["spec"]}, sort_keys=False, width=120)
        if "{{" in body or "}}" in body:
            raise ValueError(f"{name} contains '{{{{' or '}}}}'; escape it before templating")
        parts += [
            _REPORT_CRD_HEAD
            % {"name": crd["metadata"]["name"], "source": source, "var": crd["spec"]["names"]["plural"]},
            body,
            "{{- end }}\n",
        ]
    parts.append("{{- end }}\n")
    return "".join(parts)


# --- helm -----------------------------------------------------------------------------------------


def find_helm() -> Path:
    """helm from ACCESS_HYGIENE_BIN_DIR, the control-plane build cache, or PATH."""
    candidates = []
    if os.environ.get("ACCESS_HYGIENE_BIN_DIR"):
        candidates.append(Path(os.environ["ACCESS_HYGIENE_BIN_DIR"]) / "helm")
    candidates.append(HELM_CACHE / "helm")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory:
            candidates.append(Path(directory) / "helm")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("helm not found: run controlplane/build.sh or set ACCESS_HYGIENE_BIN_DIR")


def helm_template(
    helm: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE, chart: Path = CHART
) -> str:
    """`helm template` output; raises CalledProcessError (with stderr) when rendering fails."""
    command = [str(helm), "template", release, str(chart), "--namespace", namespace,
               "--kube-version", KUBE_VERSION, *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result.stdout


_DEPLOY_HEAD = """\
# Generated by scripts/render_chart.py: `helm template access-hygiene helm/access-hygiene
# --namespace access-hygiene` with default values, plus the namespace. Do not edit.
# Install: kubectl apply --server-side -f deploy/access-hygiene.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    # The operator pod meets the restricted Pod Security Standard; enforce it.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
"""


def render_deploy(helm: Path) -> str:
    return _DEPLOY_HEAD % NAMESPACE + helm_template(helm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    outputs = [(SCHEMA_PATH, render_values_schema), (CRD_TEMPLATE_PATH, render_crd_template),
               (PARAMETERS_CRD_TEMPLATE_PATH, render_parameters_crd_template),
               (REPORT_CRDS_TEMPLATE_PATH, render_report_crds_template),
               (ACCESS_ADMISSION_TEMPLATE_PATH, render_access_admission_template)]  # fmt: skip
    for crd_name, template_path in access_crd_template_paths().items():
        outputs.append((template_path, lambda name=crd_name: render_access_crd_template(name)))
    drift = []
    for path, render in outputs:  # the schema and CRD first: deploy/ is rendered from them
        text = render()
        if path.exists() and path.read_text() == text:
            continue
        drift.append(path)
        if not args.check:
            path.write_text(text)
    try:
        deploy = render_deploy(find_helm())
    except subprocess.CalledProcessError as error:
        print(f"helm template failed:\n{error.stderr}", file=sys.stderr)
        return 2
    if not DEPLOY_PATH.exists() or DEPLOY_PATH.read_text() != deploy:
        drift.append(DEPLOY_PATH)
        if not args.check:
            DEPLOY_PATH.parent.mkdir(parents=True, exist_ok=True)
            DEPLOY_PATH.write_text(deploy)
    for path in drift:
        print(f"{'drifted' if args.check else 'wrote'} {path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if args.check and drift else 0


if __name__ == "__main__":
    sys.exit(main())
