"""The pure layer: everything the operator and the CLI decide, with no I/O, no client and no system clock.

Domain packages, each importing only those below it (import-linter holds the order, see docs/architecture.md):

- planning/, admission/: what the operator writes (AccessPolicy objects and status, namespace controls) and what it
  compiles into admission policies;
- audit/: running the rule catalogue, in full (runner) or per change (incremental);
- catalogue/: the rules, one small unit per rule id, registered with @rule;
- usage/: least privilege from what identities actually did (audit events);
- rbac/: the RBAC engine: effective permissions, named capabilities, the default ClusterRoles, the grant ceiling;
- ground/: what several domains read: the snapshot, the audit context, exemptions, workloads, NetworkPolicy semantics,
  the namespace controls.
"""
