"""Ground of the pure layer: the cluster snapshot and the facts several domains read off it.

The snapshot and its object accessors, label selectors, the AuditContext every audit carries, exemptions,
workloads (one entry per pod-producing unit) with the per-audit hygiene index, NetworkPolicy semantics, the
namespace controls and whether each is in place, namespace classes for metrics. Imports nothing else of the engine.
"""
