"""Least privilege from what identities actually did: Kubernetes audit events in, AccessPolicy
suggestions and granted-but-unused permissions out.

auditlog.py parses events, aggregation.py keeps per-identity usage, suggestions.py and unused.py judge it,
counters.py and judgement.py are the bounded continuous mode (audit webhook). The counters' default bounds live here,
so that settings read them without importing the usage engine.
"""

DEFAULT_MAX_SUBJECTS = 5000  # ServiceAccounts whose usage is kept
DEFAULT_MAX_KEYS = 128  # distinct requests kept per ServiceAccount
