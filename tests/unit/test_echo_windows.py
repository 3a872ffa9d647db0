"""The scopes our workers just wrote to (k8s/echo_windows.py): a change there within the window is an echo, after it
a fresh event; the table forgets expired scopes as it grows instead of keeping every scope ever written."""

import pytest

from access_hygiene.k8s.echo_windows import EchoWindows

pytestmark = pytest.mark.unit


def test_a_change_is_an_echo_only_within_the_window_of_a_write() -> None:
    windows = EchoWindows(3.0)
    windows.mark(["shop"], now=100.0)
    assert windows.is_echo("shop", 100.0)
    assert windows.is_echo("shop", 102.9)
    assert not windows.is_echo("shop", 103.0)
    assert not windows.is_echo("other", 100.0)


def test_a_later_write_extends_the_window() -> None:
    windows = EchoWindows(3.0)
    windows.mark(["shop"], now=100.0)
    windows.mark(["shop"], now=102.0)
    assert windows.is_echo("shop", 104.5)


def test_expired_scopes_are_forgotten_as_the_table_grows() -> None:
    windows = EchoWindows(3.0, prune_above=10)
    for second in range(1000):  # 1,000 namespaces written one a second (and deleted since): all but 3 expired
        windows.mark([f"ns-{second}"], now=float(second))
        assert len(windows) <= 20
    assert windows.is_echo("ns-999", 999.5)
    assert windows.is_echo("ns-997", 999.5)
    assert not windows.is_echo("ns-996", 999.5)


def test_live_windows_are_kept_however_many() -> None:
    windows = EchoWindows(3.0, prune_above=10)
    windows.mark([f"ns-{n}" for n in range(500)], now=0.0)  # one start-up step writes to 500 scopes
    assert len(windows) == 500
    assert all(windows.is_echo(f"ns-{n}", 1.0) for n in range(500))
