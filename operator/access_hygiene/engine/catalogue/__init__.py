"""The rule catalogue: one small unit per rule id (AH-RBAC-*, AH-SA-*, AH-NET-*, AH-POD-*,
AH-GOV-*), registered with @rule (registry.py).

A rule reads a ClusterSnapshot (plus the AuditContext: settings-derived knobs and shared, precomputed views such as
effective permissions) and yields Findings. Rules never do I/O. Every module of this package is imported by
audit.runner.load_rules(); a rule file is named by what its rules check.
"""
