"""Map API errors to retry semantics: transient ones are retried soon, permanent ones are not.

An unreachable API server (connection refused, reset, timeouts) is transient too. During an outage
every caller fails at once, so retries are short and jittered (no lockstep), and the outage is
logged once when it starts and once when it ends (after a quiet spell: no flapping lines) instead of a
traceback per call; retries are counted by reason (access_hygiene_api_retries_total), and the retry
lines of urllib3 and kopf are turned into counts too.
"""

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import kopf
import kubernetes
import urllib3

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Retry delay after a transient failure: short, with jitter so workers do not retry in lockstep.
RETRY_DELAY_RANGE = (1.0, 3.0)
CONNECTION_ERRORS: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class NotLeaderError(Exception):
    """A write refused before it was sent: this replica does not hold the Lease, or its fence has passed
    (k8s/leader.py). Never retried: the replica that takes over plans everything again."""


API_FAILURES: tuple[type[Exception], ...] = (kubernetes.client.ApiException, *CONNECTION_ERRORS, NotLeaderError)

logger = logging.getLogger(__name__)
# A private generator: jitter must not draw from (or disturb) the global random state.
_JITTER = random.Random()


def api_error_message(error: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


def retry_delay() -> float:
    return _JITTER.uniform(*RETRY_DELAY_RANGE)


def is_connection_error(error: BaseException) -> bool:
    if isinstance(error, CONNECTION_ERRORS):
        return True
    return isinstance(error, kubernetes.client.ApiException) and not error.status


def is_transient(error: BaseException) -> bool:
    """Worth retrying soon: the API server is unreachable, overloaded, or the object is mid-change."""
    if is_connection_error(error):
        return True
    if isinstance(error, kubernetes.client.ApiException):
        return error.status in TRANSIENT_STATUSES or "is being terminated" in api_error_message(error)
    return False


def to_kopf_error(error: BaseException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    if isinstance(error, NotLeaderError):
        return kopf.TemporaryError(f"{what}: {error}", delay=retry_delay())
    if is_connection_error(error):
        return kopf.TemporaryError(f"{what}: API server unreachable: {type(error).__name__}", delay=retry_delay())
    assert isinstance(error, kubernetes.client.ApiException)
    message = f"{what}: HTTP {error.status}: {api_error_message(error)}"
    # A namespace being deleted refuses new content; that resolves itself, so it is not permanent.
    if is_transient(error):
        return kopf.TemporaryError(message, delay=retry_delay())
    return kopf.PermanentError(message)


@contextmanager
def api_errors_as_kopf(what: str) -> Iterator[None]:
    """Inside handlers: API errors become kopf Temporary/Permanent errors with a precise message."""
    try:
        yield
    except API_FAILURES as error:
        if is_connection_error(error):
            OUTAGE.failed(error)
        elif is_transient(error):
            OUTAGE.retried(retry_reason(error))
        raise to_kopf_error(error, what) from error


def retry_reason(error: BaseException) -> str:
    """The bounded label of a retry: why the call failed."""
    if is_connection_error(error):
        return "unreachable"
    if isinstance(error, kubernetes.client.ApiException):
        if error.status == 429:
            return "throttled"
        if error.status == 409:
            return "conflict"
        if error.status in (408, 504):
            return "timeout"
        if error.status and error.status >= 500:
            return "server-error"
        if "is being terminated" in api_error_message(error):
            return "terminating"
    return "other"


RETRY_REASONS = ("unreachable", "throttled", "conflict", "timeout", "server-error", "terminating", "other")
RetryListener = Callable[[str, int], None]
# The API server counts as back once calls have succeeded, with no failure, for this long: one line per outage even
# when it flaps while restarting (accepting connections, then refusing again).
BACK_AFTER_SECONDS = 3.0


class OutageLog:
    """One WARNING when the API server becomes unreachable, one INFO when it has answered again for
    BACK_AFTER_SECONDS without a failure; every retry counted by reason (the metric), none logged on its own."""

    def __init__(self, back_after: float = BACK_AFTER_SECONDS) -> None:
        self.back_after = back_after
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began; None while the API server answers
        self._recovering: threading.Timer | None = None  # the pending "reachable again" once nothing failed
        self._failures = 0
        self._answered_at = 0.0  # the first success after the last failure
        self.retries: Counter[str] = Counter()
        self._listener: RetryListener | None = None

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def set_listener(self, listener: RetryListener | None) -> None:
        """listener(reason, count) is called for every retry counted (the operator's metric)."""
        self._listener = listener

    def retried(self, reason: str, count: int = 1) -> None:
        """A call failed and will be tried again (by us, kopf or urllib3)."""
        reason = reason if reason in RETRY_REASONS else "other"
        with self._lock:
            self.retries[reason] += count
        listener = self._listener
        if listener is not None:
            listener(reason, count)

    def failed(self, error: BaseException) -> None:
        """A call failed because the API server could not be reached (it will be retried: counted here)."""
        self.retried(retry_reason(error))
        with self._lock:
            self._failures += 1
            if self._recovering is not None:  # it flapped: the same outage goes on, no new line
                self._recovering.cancel()
                self._recovering = None
            if self._since is None:
                self._since = time.monotonic()
                logger.warning(f"API server unreachable ({type(error).__name__}); retrying with short jittered delays.")

    def succeeded(self) -> None:
        if self._since is None:  # the common case: no lock, no work
            return
        with self._lock:
            if self._since is None or self._recovering is not None:
                return
            self._answered_at = time.monotonic()
            self._recovering = threading.Timer(self.back_after, self._back)
            self._recovering.daemon = True
            self._recovering.name = "access-hygiene-outage"
            self._recovering.start()

    def _back(self) -> None:
        with self._lock:
            since, self._recovering = self._since, None
            if since is None:
                return
            seconds = self._answered_at - since
            logger.info(f"API server reachable again after {seconds:.1f}s ({self._failures} failed call(s)).")
            self._since = None
            self._failures = 0

    def reset(self) -> None:
        """Forget any outage in progress (a new run of the controller in the same process; tests)."""
        with self._lock:
            if self._recovering is not None:
                self._recovering.cancel()
            self._since, self._recovering, self._failures = None, None, 0


OUTAGE = OutageLog()


# Loggers whose per-request retry lines (urllib3's "Retrying (...)", kopf's "Request attempt #n failed; will retry",
# kopf's "Handler ... failed temporarily: ...: API server unreachable") are counted instead of printed.
RETRY_LOGGERS = (
    "urllib3.connectionpool",
    "kopf.objects",
    "kopf._cogs.clients.api",
    "kopf._cogs.clients.watching",
    "kopf._core.engines.posting",
    "kopf._core.reactor.queueing",
    "kopf._core.reactor.observation",
)
_KOPF_RETRY = re.compile(r"Request attempt #\d+(/\d+)? failed; will retry: .* -> (?P<error>\w+)")
_KOPF_STATUS = re.compile(r"status=(?P<status>\d{3})|APIServerError|APITooManyRequestsError")


class RetryLineFilter(logging.Filter):
    """Turns a retry line into a count (and, for an unreachable API server, into the outage log's state)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith("urllib3"):
            if message.startswith("Retrying ("):
                OUTAGE.retried("unreachable")
                return False
            return True
        match = _KOPF_RETRY.search(message)
        if match is not None:
            error = match.group("error")
            if "TooManyRequests" in error:
                OUTAGE.retried("throttled")
            elif "ServerError" in error:
                OUTAGE.retried("server-error")
            elif "Forbidden" in error:
                OUTAGE.retried("other")
            else:  # aiohttp's connection errors, timeouts
                OUTAGE.failed(ConnectionError(error))
            return False
        # A kopf handler's TemporaryError from api_errors_as_kopf (already counted where it was raised).
        return not ("failed temporarily" in message and "API server unreachable" in message)


def quiet_retry_logs() -> None:
    """Install RetryLineFilter on the loggers that print a line per retried request (idempotent)."""
    for name in RETRY_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RetryLineFilter) for f in target.filters):
            target.addFilter(RetryLineFilter())
