"""Reads the default (bootstrap) ClusterRoles from a real kube-apiserver into the shipped data file.

    python scripts/generate_bootstrap_roles.py [--check]

Starts the local control plane (controlplane/, the same kube-apiserver and kube-controller-manager the tests
use), waits until the clusterrole-aggregation controller has filled the aggregated roles (admin, edit, view)
and writes every ClusterRole labelled kubernetes.io/bootstrapping=rbac-defaults to
operator/access_hygiene/engine/rbac/bootstrap_roles.json. `--check` reports drift instead (exit 1).
Run by `make generate`; tests/contract/test_bootstrap_roles.py compares the committed file with a live
kube-apiserver.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from access_hygiene.engine.rbac.bootstrap_roles import BOOTSTRAP_SELECTOR, bootstrap_document, render_document
from access_hygiene.engine.rbac.permissions import PolicyRule, resolve_cluster_roles
from access_hygiene.k8s import resources
from access_hygiene.localcluster import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
DATA_PATH = ROOT / "operator" / "access_hygiene" / "engine" / "rbac" / "bootstrap_roles.json"
AGGREGATED = ("admin", "edit", "view")
RBAC_V1 = "rbac.authorization.k8s.io/v1"


def served_bootstrap_roles(api: Any, timeout: float = 120.0) -> tuple[list[dict[str, Any]], str]:
    """The bootstrap ClusterRoles as served once aggregation has converged, and the server's gitVersion."""
    version = str(resources.request(api, "GET", "/version")["gitVersion"])
    deadline = time.monotonic() + timeout
    while True:
        listed = resources.list_objects(api, RBAC_V1, "ClusterRole", label_selector=BOOTSTRAP_SELECTOR)
        roles = list(listed)
        by_name = {role["metadata"]["name"]: role for role in roles}
        expected = resolve_cluster_roles(roles)
        converged = all(
            name in by_name
            and by_name[name].get("rules")
            and {PolicyRule.parse(r) for r in by_name[name]["rules"]} == set(expected[name])
            for name in AGGREGATED
        )
        if converged:
            return roles, version
        if time.monotonic() > deadline:
            raise SystemExit("aggregated ClusterRoles admin/edit/view never converged")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    args = parser.parse_args()
    with ControlPlane() as control_plane:
        import kubernetes

        with kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as api:
            roles, version = served_bootstrap_roles(api)
    text = render_document(bootstrap_document(roles, version))
    if args.check:
        if DATA_PATH.read_text() != text:
            print(f"{DATA_PATH.relative_to(ROOT)} differs from kube-apiserver {version}", file=sys.stderr)
            return 1
        return 0
    DATA_PATH.write_text(text)
    print(f"wrote {len(roles)} bootstrap ClusterRoles of kube-apiserver {version} to {DATA_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
