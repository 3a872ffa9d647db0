"""Default bounds of the continuous-mode usage counters (a module of its own: settings read them without
importing the usage engine)."""

DEFAULT_MAX_SUBJECTS = 5000  # ServiceAccounts whose usage is kept
DEFAULT_MAX_KEYS = 128  # distinct requests kept per ServiceAccount
