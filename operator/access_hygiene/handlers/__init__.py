"""Thin kopf adapters. Importing this package registers every handler."""

from access_hygiene.handlers import lifecycle, policy

__all__ = ["lifecycle", "policy"]
