"""access-hygiene: a Kubernetes operator that enforces access hygiene."""

__version__ = "0.1.0"

API_GROUP = "accesshygiene.io"
API_VERSION = "v1alpha1"
FIELD_MANAGER = "access-hygiene"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "access-hygiene"
POLICY_LABEL = f"{API_GROUP}/policy"
