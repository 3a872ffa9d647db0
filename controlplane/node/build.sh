#!/usr/bin/env bash
# Builds a node for the local control plane into ~/.cache/access-hygiene/node-<versions>/bin:
#   kubelet, kube-proxy, kube-scheduler (a control plane has no use for it until there is a node), agnhost (traffic
#   probes) and pause from k8s.io/kubernetes (the control plane's version),
#   containerd 2.x + containerd-shim-runc-v2 + ctr, the CNI plugins, CoreDNS and kube-network-policies.
# Every binary is static (CGO_ENABLED=0): the same files run on the host and inside the images that
# localcluster/node_images.py packs from them. runc and iptables come from the distribution (apt-get install runc
# iptables). A finished build is reused: only the first run is slow. controlplane/build.sh and its cache stamp are
# untouched: the node has Go modules of its own (k8s/, coredns/).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# One Kubernetes version for the control plane and the node.
K8S_VERSION="$(sed -n 's/^K8S_VERSION="\(.*\)"$/\1/p' "$here/../build.sh")"
CONTAINERD_VERSION="v2.4.2"
CNI_PLUGINS_VERSION="v1.10.0"
KNP_VERSION="v0.8.0"  # sigs.k8s.io/kube-network-policies
COREDNS_VERSION="$(sed -n 's/^require github.com\/coredns\/coredns \(v[^ ]*\)$/\1/p' "$here/coredns/go.mod")"
if ! grep -q "k8s.io/kubernetes $K8S_VERSION\$" "$here/k8s/go.mod"; then
  echo "controlplane/node/k8s/go.mod does not require k8s.io/kubernetes $K8S_VERSION (controlplane/build.sh's)" >&2
  exit 1
fi
cache_root="${ACCESS_HYGIENE_CACHE:-$HOME/.cache/access-hygiene}"
out="$cache_root/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-cni-$CNI_PLUGINS_VERSION-coredns-$COREDNS_VERSION-knp-$KNP_VERSION/bin"
stamp="$out/.complete-$(cd "$here" && sha256sum k8s/go.mod k8s/go.sum k8s/tools.go k8s/cmd/pause/main.go \
  coredns/go.mod coredns/go.sum coredns/main.go build.sh | sha256sum | cut -c1-16)"

if [[ -f "$stamp" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0
# -p 2: two cores, shared.
jobs="${ACCESS_HYGIENE_GO_JOBS:-2}"
echo "Building node components into $out" >&2

# kubelet, kube-proxy, kube-scheduler, agnhost, pause: k8s.io/kubernetes at the control plane's version.
pkg_version="k8s.io/component-base/version"
client_version="k8s.io/client-go/pkg/version"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in "$pkg_version" "$client_version"; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
(
  cd "$here/k8s"
  go build -p "$jobs" -ldflags "$ldflags" -o "$out/kubelet" k8s.io/kubernetes/cmd/kubelet
  go build -p "$jobs" -ldflags "$ldflags" -o "$out/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
  go build -p "$jobs" -ldflags "$ldflags" -o "$out/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
  go build -p "$jobs" -ldflags "$ldflags" -o "$out/agnhost" k8s.io/kubernetes/test/images/agnhost
  go build -p "$jobs" -ldflags "-s -w" -o "$out/pause" ./cmd/pause
)

# The rest from their own modules at released versions (go install pkg@version: upstream's own go.mod).
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
containerd_pkg="github.com/containerd/containerd/v2"
# Tags as containerd's Makefile, minus snapshotters and tracing exporters the node does not use.
GOBIN="$gobin" go install -p "$jobs" -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs no_tracing" \
  -ldflags "-s -w -X $containerd_pkg/version.Version=$CONTAINERD_VERSION -X $containerd_pkg/version.Revision=release" \
  "$containerd_pkg/cmd/containerd@$CONTAINERD_VERSION" \
  "$containerd_pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  "$containerd_pkg/cmd/ctr@$CONTAINERD_VERSION"
cni_pkg="github.com/containernetworking/plugins"
GOBIN="$gobin" go install -p "$jobs" \
  -ldflags "-s -w -X $cni_pkg/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
  "$cni_pkg/plugins/main/bridge@$CNI_PLUGINS_VERSION" \
  "$cni_pkg/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
  "$cni_pkg/plugins/main/ptp@$CNI_PLUGINS_VERSION" \
  "$cni_pkg/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
  "$cni_pkg/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
GOBIN="$gobin" go install -p "$jobs" -ldflags "-s -w" "sigs.k8s.io/kube-network-policies/cmd@$KNP_VERSION"
mv "$gobin/cmd" "$gobin/kube-network-policies"
mkdir -p "$out/cni"
for plugin in bridge loopback ptp host-local portmap; do
  mv "$gobin/$plugin" "$out/cni/$plugin"
done
mv "$gobin"/containerd "$gobin"/containerd-shim-runc-v2 "$gobin"/ctr "$gobin"/kube-network-policies "$out/"
(
  cd "$here/coredns"
  go build -p "$jobs" -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    -o "$out/coredns" .
)
rm -f "$out"/.complete-*
touch "$stamp"
echo "$out"
