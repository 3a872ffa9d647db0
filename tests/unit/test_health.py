"""The operator's health endpoints: liveness answers while the loop runs, readiness follows the controller."""

import asyncio
import json
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace

import kopf
import pytest

from access_hygiene.handlers.health import READINESS_PATH, health_server

pytestmark = pytest.mark.unit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_readiness_follows_the_controller() -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    memo = kopf.Memo()
    seen: list[tuple[str, int]] = []

    async def scenario() -> None:
        async with health_server(f"{base}/healthz", memo):

            async def probe(path: str) -> None:
                status, _ = await asyncio.to_thread(_get, base + path)
                seen.append((path, status))

            await probe("/healthz")
            await probe(READINESS_PATH)  # no runtime yet (start-up handlers have not run)
            controller = SimpleNamespace(ready=asyncio.Event())
            memo["runtime"] = SimpleNamespace(controller=controller)
            await probe(READINESS_PATH)  # watch cache not synced yet
            controller.ready.set()
            await probe(READINESS_PATH)
            await probe("/healthz")

    asyncio.run(scenario())
    assert seen == [
        ("/healthz", 200),
        (READINESS_PATH, 503),
        (READINESS_PATH, 503),
        (READINESS_PATH, 200),
        ("/healthz", 200),
    ]


def test_health_endpoint_needs_a_port() -> None:
    async def scenario() -> None:
        async with health_server("http://0.0.0.0/healthz", kopf.Memo()):
            pass

    with pytest.raises(ValueError, match="HOST:PORT"):
        asyncio.run(scenario())
