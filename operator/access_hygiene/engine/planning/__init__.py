"""What the operator writes, decided without I/O: an AccessPolicy's objects (policy_plan.py,
validation.py) and status (policy_status.py), a namespace's hygiene controls with the breakage forecast and the
summary annotation (namespace_plan.py)."""
