"""Running the catalogue: every rule over one snapshot with exemptions applied (runner.py), and
the incremental audit that re-audits only what one change can affect (incremental.py)."""
