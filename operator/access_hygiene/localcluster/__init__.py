"""A real local control plane (etcd + kube-apiserver + kube-controller-manager) for tests and demos.

Binaries come from controlplane/build.sh (built from Go modules, cached under ~/.cache/access-hygiene)
or from ACCESS_HYGIENE_BIN_DIR. Nothing here imports the kubernetes client: readiness is plain HTTPS.
"""

from access_hygiene.localcluster.controlplane import ControlPlane, ControlPlaneError, find_binaries

__all__ = ["ControlPlane", "ControlPlaneError", "find_binaries"]
