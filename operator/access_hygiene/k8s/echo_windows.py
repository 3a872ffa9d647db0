"""Fresh events first: which scopes our own workers wrote to recently, so that a change there is taken for the echo
of those writes (re-audited after the fresh events, in steps) rather than for a user's event."""

from collections.abc import Iterable


class EchoWindows:
    """Scope -> until when (monotonic seconds) its changes count as our echo. Expired windows are dropped as the
    table grows, so it stays bounded by the scopes written within one window, not by every scope ever written
    (deleted namespaces included)."""

    def __init__(self, seconds: float, prune_above: int = 1024) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}
        self._prune_floor = prune_above
        self._prune_above = prune_above

    def mark(self, scopes: Iterable[str], now: float) -> None:
        until = now + self.seconds
        for scope in scopes:
            self._until[scope] = until
        if len(self._until) > self._prune_above:
            self._until = {scope: end for scope, end in self._until.items() if end > now}
            # Amortised: the next pass waits until the live table has doubled again.
            self._prune_above = max(self._prune_floor, 2 * len(self._until))

    def is_echo(self, scope: str, now: float) -> bool:
        return self._until.get(scope, 0.0) > now

    def __len__(self) -> int:
        return len(self._until)
