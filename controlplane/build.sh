#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd (and installs helm) into
# ~/.cache/access-hygiene/<versions>/bin. A finished build is reused: only the first run is slow.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.8"
HELM_VERSION="v3.22.0"
cache_root="${ACCESS_HYGIENE_CACHE:-$HOME/.cache/access-hygiene}"
out="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
# The sources' contents only (sha256sum's own output names the files): every checkout of them shares the build.
stamp="$out/.complete-$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" "$here/cmd/etcd/main.go" "$0" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0
# -p 2: the machines have two cores; linking three big binaries at once also costs memory.
pkg_version="k8s.io/component-base/version"
client_version="k8s.io/client-go/pkg/version"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in "$pkg_version" "$client_version"; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
cd "$here"
echo "Building control plane $K8S_VERSION into $out" >&2
go build -p 2 -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -p 2 -ldflags "$ldflags" -o "$out/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
# kubectl for people using the local default (`access-hygiene local` puts it on the printed PATH).
go build -p 2 -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -p 2 -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release" -o "$out/etcd" ./cmd/etcd
# helm's own release build sets the Kubernetes version it assumes when it asks no cluster (`helm template`,
# `helm lint`, `helm install --dry-run`); without it helm assumes v1.20.0 and refuses the chart (kubeVersion
# >=1.29.0-0) unless --kube-version is passed. The bundled helm assumes the control plane's version.
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
done
helm_stamp="$out/.helm-$(printf '%s' "$helm_ldflags" | sha256sum | cut -c1-16)"
if [[ ! -x "$out/helm" || ! -f "$helm_stamp" ]]; then
  GOBIN="$out" go install -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  touch "$helm_stamp"
fi
touch "$stamp"
echo "$out"
