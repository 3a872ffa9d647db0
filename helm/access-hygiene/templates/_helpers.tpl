{{/* Chart name, overridable. */}}
{{- define "access-hygiene.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "access-hygiene.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "access-hygiene.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades. */}}
{{- define "access-hygiene.selectorLabels" -}}
app.kubernetes.io/name: {{ include "access-hygiene.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "access-hygiene.labels" -}}
{{ include "access-hygiene.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: access-hygiene
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "access-hygiene.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "access-hygiene.serviceAccountName" -}}
{{- default (include "access-hygiene.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "access-hygiene.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when this release may render the cluster-scoped object (dict: root, apiVersion, kind, name): it does not
exist yet, or this release installed it. One of the same name installed otherwise (`access-hygiene local`,
`kubectl apply -f deploy/`, another release) cannot be taken over by Helm: the chart leaves it as it is.
`helm template` cannot look into a cluster and always renders it.
*/}}
{{- define "access-hygiene.ownedOrAbsent" -}}
{{- $found := lookup .apiVersion .kind "" .name -}}
{{- $release := dig "metadata" "annotations" "meta.helm.sh/release-name" "" $found -}}
{{- $namespace := dig "metadata" "annotations" "meta.helm.sh/release-namespace" "" $found -}}
{{- if or (not $found) (and (eq $release .root.Release.Name) (eq $namespace .root.Release.Namespace)) -}}
true
{{- end -}}
{{- end }}

{{/* The AccessPolicy CRD is this release's to render (see access-hygiene.ownedOrAbsent). */}}
{{- define "access-hygiene.rendersCRD" -}}
{{- include "access-hygiene.ownedOrAbsent" (dict "root" . "apiVersion" "apiextensions.k8s.io/v1" "kind" "CustomResourceDefinition" "name" "accesspolicies.accesshygiene.io") -}}
{{- end }}

{{/*
The grant ceiling ClusterRole is this release's to render. One installed otherwise is used as it is when its rules
are grantCeiling.rules (what `access-hygiene local` and deploy/ install); otherwise the install fails and says why,
rather than bind the operator to a ceiling other than the values'.
*/}}
{{- define "access-hygiene.rendersGrantCeiling" -}}
{{- $name := .Values.grantCeiling.name -}}
{{- if include "access-hygiene.ownedOrAbsent" (dict "root" . "apiVersion" "rbac.authorization.k8s.io/v1" "kind" "ClusterRole" "name" $name) -}}
true
{{- else -}}
{{- $found := lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" $name -}}
{{- $release := dig "metadata" "annotations" "meta.helm.sh/release-name" "" $found -}}
{{- if $release -}}
{{- fail (printf "grantCeiling.name: ClusterRole %s belongs to Helm release %s in namespace %s; choose another grantCeiling.name" $name $release (dig "metadata" "annotations" "meta.helm.sh/release-namespace" "" $found)) -}}
{{- else if ne (toJson (default list $found.rules)) (toJson .Values.grantCeiling.rules) -}}
{{- fail (printf "grantCeiling: ClusterRole %s already exists, not installed by Helm (by `access-hygiene local` or `kubectl apply -f deploy/`?), and its rules differ from grantCeiling.rules; set grantCeiling.create=false to use it as it is, or delete it so that the chart creates it" $name) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The leader-election Lease's name (docs/ha.md). */}}
{{- define "access-hygiene.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "access-hygiene.fullname" .) -}}
{{- end -}}
