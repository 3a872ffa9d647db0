"""The operator's health endpoints, served in its event loop: liveness (the loop answers: what kopf's own
liveness endpoint reported, as the operator registers no probe handlers) and readiness, true once the watch cache
is synced, the first audit is done and the controller reacts to events (the Pod then receives /metrics traffic
through its Service, and a rollout waits for it)."""

import contextlib
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp.web
import kopf

READINESS_PATH = "/readyz"


def is_ready(memo: kopf.Memo) -> bool:
    runtime = memo.get("runtime")
    controller = getattr(runtime, "controller", None)
    return controller is not None and controller.ready.is_set()


@contextlib.asynccontextmanager
async def health_server(endpoint: str, memo: kopf.Memo) -> AsyncIterator[None]:
    """Serve GET <endpoint's path> (liveness) and GET /readyz on the endpoint's host and port while inside."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http" or parts.port is None:
        raise ValueError(f"health endpoint must be http://HOST:PORT/PATH, not {endpoint}")

    async def alive(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({})

    async def ready(_: aiohttp.web.Request) -> aiohttp.web.Response:
        if is_ready(memo):
            return aiohttp.web.json_response({"ready": True})
        return aiohttp.web.json_response({"ready": False}, status=503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", alive), aiohttp.web.get(READINESS_PATH, ready)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port).start()
    try:
        yield
    finally:
        await runner.cleanup()
