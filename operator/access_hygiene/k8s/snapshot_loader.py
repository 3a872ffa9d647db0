"""Loading a ClusterSnapshot from the live API: every kind the rules read, paged, as API-shaped dicts."""

from collections.abc import Callable

import kubernetes

from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.k8s.resources import list_objects

# (apiVersion, kind) in load order; RBAC first so a progress display shows the core data early.
SNAPSHOT_KINDS: tuple[tuple[str, str], ...] = (
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("accesshygiene.io/v1alpha1", "AccessPolicy"),
)
PAGE_SIZE = 500
# Kinds a cluster may legitimately not serve (the CRD is not installed where only the CLI runs).
OPTIONAL_KINDS = frozenset({"AccessPolicy"})

Progress = Callable[[str, int], None]


def load_snapshot(
    api_client: kubernetes.client.ApiClient,
    *,
    include_secrets: bool = False,
    progress: Progress | None = None,
) -> ClusterSnapshot:
    """List every kind the rules read. Secrets only when include_secrets, and metadata-only
    (PartialObjectMetadataList): their data is never fetched. progress(kind, loaded_so_far) is called
    after each page."""
    snapshot = ClusterSnapshot()
    kinds = [*SNAPSHOT_KINDS, *([("v1", "Secret")] if include_secrets else [])]
    for api_version, kind in kinds:
        count = 0
        try:
            for obj in list_objects(api_client, api_version, kind, page_size=PAGE_SIZE, metadata_only=kind == "Secret"):
                snapshot.add(obj)
                count += 1
                if progress is not None and count % PAGE_SIZE == 0:
                    progress(kind, count)
        except kubernetes.client.ApiException as error:
            if error.status == 404 and kind in OPTIONAL_KINDS:
                continue
            raise
        if progress is not None:
            progress(kind, count)
    return snapshot


class SnapshotLoadError(Exception):
    """The live cluster could not be read (bad kubeconfig, unreachable API, API error)."""


def load_live_snapshot(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    include_secrets: bool = False,
    progress: Progress | None = None,
) -> ClusterSnapshot:
    """load_snapshot() through a client from a kubeconfig/context (or in-cluster), errors as SnapshotLoadError."""
    import urllib3

    from access_hygiene.k8s.client import make_api_client

    try:
        with make_api_client(kubeconfig, context) as api:
            return load_snapshot(api, include_secrets=include_secrets, progress=progress)
    except kubernetes.config.ConfigException as error:
        raise SnapshotLoadError(f"kubeconfig: {error}") from None
    except kubernetes.client.ApiException as error:
        raise SnapshotLoadError(f"cluster API error: {error.status} {error.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise SnapshotLoadError(f"cannot reach the cluster: {error}") from None
