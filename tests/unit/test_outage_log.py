"""An unreachable API server: one WARNING, one INFO once it has answered for a while (not at every flap), retries
counted by reason, and the per-request retry lines of urllib3 and kopf turned into counts."""

import logging
import threading
import time

import kubernetes
import pytest
import urllib3

from access_hygiene.k8s import errors
from access_hygiene.k8s.errors import OutageLog, RetryLineFilter, quiet_retry_logs, retry_reason

pytestmark = pytest.mark.unit
REFUSED = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, " ".join(r.getMessage().split()[:3])) for r in caplog.records if r.name == errors.logger.name]


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_one_warning_then_one_info_after_a_quiet_spell(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(back_after=0.2)
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            outage.failed(REFUSED)
        assert outage_lines(caplog) == [("WARNING", "API server unreachable")]
        outage.succeeded()
        assert outage.in_outage  # not back until it has answered for a while
        wait_until(lambda: not outage.in_outage)
    assert outage_lines(caplog) == [("WARNING", "API server unreachable"), ("INFO", "API server reachable")]
    assert "50 failed call(s)" in caplog.records[-1].getMessage()


def test_a_flapping_api_server_is_one_outage(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(back_after=0.3)
    with caplog.at_level(logging.INFO):
        for _ in range(10):  # answers, then refuses again, well within the quiet spell
            outage.failed(REFUSED)
            outage.succeeded()
            time.sleep(0.02)
        assert outage.in_outage
        wait_until(lambda: not outage.in_outage)
        outage.succeeded()  # calls after it is back cost nothing and say nothing
    assert [level for level, _ in outage_lines(caplog)] == ["WARNING", "INFO"]


def test_success_without_an_outage_starts_nothing() -> None:
    outage = OutageLog(back_after=0.05)
    threads = threading.active_count()
    outage.succeeded()
    assert threading.active_count() == threads
    assert not outage.in_outage


def test_retries_are_counted_by_reason_and_passed_to_the_listener() -> None:
    outage = OutageLog(back_after=60)
    seen: list[tuple[str, int]] = []
    outage.set_listener(lambda reason, count: seen.append((reason, count)))
    outage.failed(REFUSED)
    outage.retried(retry_reason(kubernetes.client.ApiException(status=429)))
    outage.retried("made-up")
    outage.reset()
    assert seen == [("unreachable", 1), ("throttled", 1), ("other", 1)]
    assert outage.retries == {"unreachable": 1, "throttled": 1, "other": 1}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (REFUSED, "unreachable"),
        (ConnectionResetError(), "unreachable"),
        (kubernetes.client.ApiException(status=0), "unreachable"),
        (kubernetes.client.ApiException(status=429), "throttled"),
        (kubernetes.client.ApiException(status=409), "conflict"),
        (kubernetes.client.ApiException(status=504), "timeout"),
        (kubernetes.client.ApiException(status=503), "server-error"),
        (kubernetes.client.ApiException(status=400), "other"),
    ],
)
def test_retry_reason(error: BaseException, reason: str) -> None:
    assert retry_reason(error) == reason


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.fixture
def fresh_outage(monkeypatch: pytest.MonkeyPatch) -> OutageLog:
    outage = OutageLog(back_after=60)
    monkeypatch.setattr(errors, "OUTAGE", outage)
    return outage


URLLIB3_RETRY = (
    "Retrying (Retry(total=2, connect=None)) after connection broken by 'NewConnectionError(...)': /api/v1/namespaces"
)
HANDLER_RETRY = (
    "Handler 'policy-cleanup' failed temporarily: AccessPolicy cleanup: API server unreachable: MaxRetryError"
)


def test_retry_lines_become_counts(fresh_outage: OutageLog) -> None:
    line_filter = RetryLineFilter()
    kopf_retry = (
        "Request attempt #1/9 failed; will retry: PATCH https://127.0.0.1:6443/apis/accesshygiene.io/v1alpha1/"
        "namespaces/a/accesspolicies/p -> ClientConnectorError(ConnectionKey(host='127.0.0.1'), "
        "ConnectionRefusedError(111, 'Connect call failed'))"
    )
    dropped = [
        record("urllib3.connectionpool", logging.WARNING, URLLIB3_RETRY),
        record("kopf.objects", logging.ERROR, kopf_retry),
        record("kopf.objects", logging.ERROR, kopf_retry.replace("ClientConnectorError", "APIServerError")),
        record("kopf.objects", logging.ERROR, HANDLER_RETRY),
    ]
    kept = [
        record("urllib3.connectionpool", logging.WARNING, "Connection pool is full, discarding connection: x"),
        record("kopf.objects", logging.ERROR, kopf_retry.replace("will retry", "escalating")),
        record("kopf.objects", logging.ERROR, "Handler 'policy-cleanup' failed permanently: HTTP 422"),
        record("kopf.objects", logging.INFO, "AccessPolicy deleted; removed 3 generated object(s)."),
    ]
    assert [line_filter.filter(r) for r in dropped] == [False] * len(dropped)
    assert [line_filter.filter(r) for r in kept] == [True] * len(kept)
    assert fresh_outage.retries == {"unreachable": 2, "server-error": 1}
    assert fresh_outage.in_outage  # kopf's connection failures count as the API server being away
    fresh_outage.reset()


def test_quiet_retry_logs_is_installed_once() -> None:
    quiet_retry_logs()
    quiet_retry_logs()
    for name in errors.RETRY_LOGGERS:
        assert sum(isinstance(f, RetryLineFilter) for f in logging.getLogger(name).filters) == 1
