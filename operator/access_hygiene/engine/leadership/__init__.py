"""Leader election decisions, pure: who holds the Lease, whether to take or renew it, until when to write."""
