"""Thin kopf adapters. Importing this package registers every handler.

kopf serves no resource: the event-driven controller (k8s/controller.py) reconciles AccessPolicies and holds
their finalizer, behind the leader's write gate (docs/ha.md), so a standby replica's kopf never writes."""

from access_hygiene.handlers import lifecycle

__all__ = ["lifecycle"]
