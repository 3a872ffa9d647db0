"""The RBAC engine: bindings joined with their roles as the RBAC authorizer sees them.

Effective permissions (permissions.py), named capability patterns and what a binding confers (capabilities.py), the
default ClusterRoles kube-apiserver creates (bootstrap_roles.py), the grant ceiling of AccessPolicies
(grant_ceiling.py). Knows no rule of the catalogue.
"""
