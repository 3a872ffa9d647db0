"""Pure planning (desired vs observed) and the audit rules."""
