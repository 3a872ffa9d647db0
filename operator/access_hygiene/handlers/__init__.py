"""Thin kopf adapters. Importing this package registers every handler."""

from access_hygiene.handlers import admission, lifecycle, namespaces, policy, scan

__all__ = ["admission", "lifecycle", "namespaces", "policy", "scan"]
