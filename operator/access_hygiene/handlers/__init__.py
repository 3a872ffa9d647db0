"""Thin kopf adapters. Importing this package registers every handler."""

from access_hygiene.handlers import lifecycle, policy

# isort: split
# Registered after lifecycle: kopf runs start-up handlers in order, and admission needs the runtime.
from access_hygiene.handlers import admission

__all__ = ["admission", "lifecycle", "policy"]
