"""Just-in-time access, pure: whether an eligibility's role may be granted (risk.py) and what one AccessRequest
should be given its eligibility, approvals, bindings and `now` (state.py)."""
