"""The access-hygiene command."""
