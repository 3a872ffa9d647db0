"""Map API errors to kopf's retry semantics: transient ones are retried, permanent ones are not."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
import kubernetes

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def api_error_message(error: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


def to_kopf_error(error: kubernetes.client.ApiException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    detail = api_error_message(error)
    message = f"{what}: HTTP {error.status}: {detail}"
    # A namespace being deleted refuses new content; that resolves itself, so it is not permanent.
    if error.status in TRANSIENT_STATUSES or error.status is None or "is being terminated" in detail:
        return kopf.TemporaryError(message, delay=10)
    return kopf.PermanentError(message)


@contextmanager
def api_errors_as_kopf(what: str) -> Iterator[None]:
    """Inside handlers: API errors become kopf Temporary/Permanent errors with a precise message."""
    try:
        yield
    except kubernetes.client.ApiException as error:
        raise to_kopf_error(error, what) from error
