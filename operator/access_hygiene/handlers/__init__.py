"""Thin kopf adapters. Importing this package registers every handler."""

from access_hygiene.handlers import lifecycle, namespaces, policy, scan

__all__ = ["lifecycle", "namespaces", "policy", "scan"]
