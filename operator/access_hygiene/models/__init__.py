"""Pydantic models: the AccessPolicy spec/status (source of the CRD) and findings. No I/O."""
