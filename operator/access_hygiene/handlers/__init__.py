"""Thin kopf adapters. Importing this package registers the handlers."""
