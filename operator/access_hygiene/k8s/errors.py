"""Map API errors to retry semantics: transient ones are retried soon, permanent ones are not.

An unreachable API server (connection refused, reset, timeouts) is transient too. During an outage
every caller fails at once, so retries are short and jittered (no lockstep), and the outage is
logged once when it starts and once when it ends instead of a traceback per call.
"""

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
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
        raise to_kopf_error(error, what) from error


class OutageLog:
    """One log line when the API server becomes unreachable and one when it answers again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since = time.monotonic()
                logger.warning(f"API server unreachable ({type(error).__name__}); retrying with short jittered delays.")

    def succeeded(self) -> None:
        if not self.in_outage:  # the common case: no lock, no work
            return
        with self._lock:
            since = self._since
            if since is None:
                return
            seconds = time.monotonic() - since
            logger.warning(f"API server reachable again after {seconds:.1f}s ({self._failures} failed call(s)).")
            self._since = None
            self._failures = 0


OUTAGE = OutageLog()
