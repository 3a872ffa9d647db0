"""The audit webhook: an HTTPS endpoint kube-apiserver posts its audit events to (--audit-webhook-config-file).

kube-apiserver's webhook backend POSTs `audit.k8s.io/v1` EventLists (batched) to the server URL of its
webhook kubeconfig, here `https://<operator>:<port>/audit`. Each event is parsed with the same code as the
CLI's audit-log reader (engine/usage/auditlog.py) and handed to a sink (the usage counters).

Runs in threads of its own (stdlib http.server + ssl), never on kopf's event loop: one accept thread, one
thread per connection, at most MAX_CONNECTIONS at once (more are closed at once), each with a socket timeout,
so a slow or stuck client cannot pin the operator. The TLS handshake happens in the connection's thread.

Authentication, at least one of (both when both are configured):
- a bearer token (the webhook kubeconfig's `user.token`), read from a file (a mounted Secret; re-read when
  it changes), compared in constant time;
- a client certificate signed by a given CA (`user.client-certificate`), verified by the TLS layer.
With several replicas (docs/ha.md) only the leader's counters are judged: a standby that receives a batch relays
it to the leader (see LeaderRelay) and answers with the leader's verdict; when no leader can take it, 503 with
Retry-After, which kube-apiserver's webhook backend retries (it drops a batch only after its retries run out).
Answers: 200 accepted (events that cannot be used are counted, not refused: the API server would retry the
whole batch), 400 body that is not an audit EventList, 401 not authenticated, 404 other path, 405 other
method, 411 no Content-Length, 413 body over the limit. Bad input never raises out of a request thread.
"""

import contextlib
import hmac
import http.client
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from access_hygiene.engine.usage.auditlog import AUDIT_API_VERSION, AuditRequest, LineError, parse_event
from access_hygiene.engine.usage.replica import HEARTBEAT
from access_hygiene.k8s.usage_mirror import HEARTBEAT_SECONDS, MIRROR_PATH, Subscription, SubscriptionClosedError

logger = logging.getLogger(__name__)

AUDIT_PATH = "/audit"
MAX_CONNECTIONS = 32
SOCKET_TIMEOUT_SECONDS = 15.0
DISCARD_LIMIT_BYTES = 64 * 1024  # bodies of refused requests up to this size are read before answering
# What the receiver tells its sink and its metrics.
Sink = Callable[[list[AuditRequest]], dict[str, int]]
RequestCounter = Callable[[str], None]
EventCounter = Callable[[str, int], None]
RELAYED_HEADER = "X-Access-Hygiene-Relayed"  # a relayed batch is never relayed again
RETRY_AFTER_SECONDS = 2
RELAY_TIMEOUT_SECONDS = 5.0
REPLICA_HEADER = "X-Access-Hygiene-Replica"  # who subscribes to the mirror (logs)
HEARTBEAT_LINE = json.dumps({"kind": HEARTBEAT}).encode() + b"\n"


class MirrorSource(Protocol):
    """The leader's counters as standbys follow them (k8s/usage_mirror.py)."""

    def subscribe(self, name: str) -> tuple[Subscription, bytes] | None:
        """A subscription and the snapshot line that starts it; None when this replica does not lead."""

    def unsubscribe(self, subscription: Subscription) -> None: ...

    def leads(self) -> bool: ...


@dataclass
class Batch:
    """One POST body, parsed: the usable requests and how many events were skipped or invalid."""

    requests: list[AuditRequest] = field(default_factory=list)
    ignored: int = 0  # normal: other stages, no user
    invalid: int = 0  # events that are not readable audit events
    error: str = ""  # set when the body as a whole is unusable (400)


def parse_batch(body: bytes) -> Batch:
    """An EventList (the webhook's format) or a single Event, as JSON bytes."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        return Batch(error=f"malformed JSON: {str(error)[:120] or type(error).__name__}")
    if not isinstance(document, dict):
        return Batch(error=f"a JSON {type(document).__name__}, not an audit EventList")
    api_version = document.get("apiVersion")
    if api_version != AUDIT_API_VERSION:
        return Batch(error=f"apiVersion {api_version!r}; only {AUDIT_API_VERSION} is read")
    kind = document.get("kind")
    if kind == "Event":
        items: list[Any] = [document]
    elif kind == "EventList" and isinstance(document.get("items"), list):
        items = document["items"]
    else:
        return Batch(error=f"kind {kind!r}; expected an EventList with items")
    batch = Batch()
    for item in items:
        parsed = parse_event(item)  # items carry no apiVersion (or the list's own; another one is refused)
        if isinstance(parsed, LineError):
            if parsed.is_error:
                batch.invalid += 1
            else:
                batch.ignored += 1
        else:
            batch.requests.append(parsed)
    return batch


class TokenFile:
    """A bearer token read from a file, re-read when the file changes (a rotated Secret)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = b""
        self._reported = False  # an unreadable file was logged (once, until it is readable again)
        self._lock = threading.Lock()

    def current(self) -> bytes:
        try:
            stat = os.stat(self.path)
        except OSError as error:
            self._failed(error)
            return b""
        with self._lock:
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                try:
                    with open(self.path, "rb") as handle:
                        self._token = handle.read().strip()
                except OSError as error:
                    self._failed(error)
                    return b""
                self._stamp = stamp
                if not self._token:
                    logger.error(f"Audit webhook token file {self.path} is empty; refusing every request.")
            return self._token

    def _failed(self, error: OSError) -> None:
        """Logged once per failure, not per request (the API server posts several times a second)."""
        with self._lock:
            if self._stamp is not None or not self._reported:
                logger.error(f"Audit webhook token file {self.path} is unreadable: {error}; refusing every request.")
            self._stamp, self._token, self._reported = None, b"", True

    def matches(self, header: str | None) -> bool:
        expected = self.current()
        if not expected or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), expected)


def server_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"  # keep-alive: the API server posts batch after batch
    server_version = "access-hygiene-audit-webhook"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("Audit webhook: " + format, *args)

    def _reply(self, code: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"code": code, "message": message} if message else {}).encode()
        self.server.count_request(str(code))  # before the answer leaves: whoever reads it finds it counted
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        receiver = self.server
        if self.path.split("?", 1)[0] != AUDIT_PATH:
            self.close_connection = True
            self._discard_body()
            self._reply(404, f"not found; audit events go to {AUDIT_PATH}")
            return
        if receiver.token is not None and not receiver.token.matches(self.headers.get("Authorization")):
            self.close_connection = True
            self._discard_body()  # so the client reads the answer instead of a reset
            self._reply(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="access-hygiene"'})
            return
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_header is None:
            self.close_connection = True
            self._reply(411, "a Content-Length is required")
            return
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > receiver.max_body_bytes:
            self.close_connection = True
            self._discard_body()
            self._reply(413, f"body over {receiver.max_body_bytes} bytes" if length >= 0 else "bad Content-Length")
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            self._reply(400, "body shorter than its Content-Length")
            return
        batch = parse_batch(body)
        if batch.error:
            receiver.count_events("invalid", 1)
            self._reply(400, batch.error)
            return
        relayed = receiver.relay(body, relayed=bool(self.headers.get(RELAYED_HEADER)))
        if relayed is False:
            receiver.count_events("deferred", len(batch.requests))
            self._reply(503, "no leader took the batch; retry", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            return
        # Relayed, this replica counts it unless it follows the leader's counters (the batch comes back mirrored).
        sink = receiver.sink_relayed if relayed else receiver.sink
        outcomes = sink(batch.requests) if batch.requests else {}
        receiver.count_events("invalid", batch.invalid)
        receiver.count_events("ignored", batch.ignored + outcomes.get("ignored", 0))
        receiver.count_events("recorded", outcomes.get("recorded", 0))
        receiver.count_events("dropped", outcomes.get("dropped", 0))
        self._reply(200)

    def _discard_body(self) -> None:
        """Read (and drop) a small body of a refused request; a large one is left for the connection close."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= DISCARD_LIMIT_BYTES:
            self.rfile.read(length)

    def _refuse_method(self) -> None:
        self.close_connection = True
        self._reply(405, "only POST", {"Allow": "POST"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse_method  # noqa: N815

    def do_GET(self) -> None:
        receiver = self.server
        if self.path.split("?", 1)[0] != MIRROR_PATH or receiver.mirror is None:
            self._refuse_method()
            return
        self.close_connection = True
        # The mirror hands out every ServiceAccount's usage: a bearer token is required (a client certificate
        # alone is what kube-apiserver has, never a replica).
        if receiver.token is None or not receiver.token.matches(self.headers.get("Authorization")):
            self._reply(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="access-hygiene"'})
            return
        name = str(self.headers.get(REPLICA_HEADER) or self.client_address[0])[:253]
        subscribed = receiver.mirror.subscribe(name)
        if subscribed is None:
            self._reply(503, "this replica does not lead", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            return
        subscription, snapshot = subscribed
        try:
            self._stream(subscription, snapshot, receiver.mirror)
        except (OSError, ValueError, SubscriptionClosedError) as error:
            logger.info(f"Audit usage mirror: {subscription.name} no longer follows ({type(error).__name__}).")
        finally:
            receiver.mirror.unsubscribe(subscription)

    def _stream(self, subscription: Subscription, snapshot: bytes, source: MirrorSource) -> None:
        self.server.count_request("200")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(snapshot)
        while source.leads():
            frame = subscription.next_frame(HEARTBEAT_SECONDS)
            if frame is None:
                self.wfile.write(HEARTBEAT_LINE)
                continue
            sequence, line = frame
            self.wfile.write(line)
            acknowledged = self.rfile.readline(64)
            if int(acknowledged) != sequence:  # ValueError on a torn line; the stream is in order
                raise ValueError(f"acknowledged {acknowledged!r}, expected {sequence}")
            subscription.ack(sequence)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        token: TokenFile | None,
        sink: Sink,
        count_request: RequestCounter,
        count_events: EventCounter,
        max_body_bytes: int,
        relay: "LeaderRelay | None" = None,
        mirror: MirrorSource | None = None,
        sink_relayed: Sink | None = None,
    ) -> None:
        self.context = context
        self.token = token
        self.sink = sink
        self.sink_relayed = sink_relayed or sink
        self.mirror = mirror
        self._relay = relay
        self.count_request = count_request
        self.count_events = count_events
        self.max_body_bytes = max_body_bytes
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def relay(self, body: bytes, *, relayed: bool) -> bool | None:
        """None: record here (this replica leads, or runs alone); True: the leader took the batch; False: no leader
        took it, the API server should retry."""
        if self._relay is None:
            return None
        if relayed:  # relayed to a replica that no longer leads: refused, never relayed on (no loops)
            return None if self._relay.leads() else False
        return self._relay(body)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.count_request("busy")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake and the HTTP exchange, in the connection's own thread."""
        request.settimeout(SOCKET_TIMEOUT_SECONDS)
        # The answer goes out as headers + body, two writes: without this, Nagle holds the second until the
        # client's delayed ACK (~40 ms per batch on Linux).
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            secure = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.count_request("tls-failed")
            logger.debug(f"Audit webhook TLS handshake with {client_address} failed: {error}")
            return
        try:
            self.RequestHandlerClass(secure, client_address, self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as error:  # timeouts and resets mid-request
            logger.debug(f"Audit webhook connection from {client_address} ended: {error}")
        except Exception:
            logger.exception("Audit webhook request failed.")
        finally:
            with contextlib.suppress(OSError):
                secure.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception(f"Audit webhook connection from {client_address} failed.")


class AuditWebhookServer:
    """The receiver's lifecycle: start() binds and serves in a daemon thread, stop() closes it."""

    def __init__(
        self,
        addr: str,
        port: int,
        context: ssl.SSLContext,
        token_file: str,
        sink: Sink,
        count_request: RequestCounter,
        count_events: EventCounter,
        max_body_bytes: int,
        relay: "LeaderRelay | None" = None,
        mirror: MirrorSource | None = None,
        sink_relayed: Sink | None = None,
    ) -> None:
        self._address = (addr, port)
        self._args = (context, TokenFile(token_file) if token_file else None, sink, count_request, count_events,
                      max_body_bytes, relay, mirror, sink_relayed)  # fmt: skip
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = _Server(self._address, *self._args)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="access-hygiene-audit-webhook",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        logger.info(f"Audit webhook serving on https://{self._address[0]}:{self.port}{AUDIT_PATH}.")

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


class LeaderRelay:
    """A standby's way to the leader's receiver. `leads` says whether this replica leads (then nothing is relayed);
    `leader_url` is the leader's advertised receiver (from the Lease), None when no valid holder advertises one.

    The leader is authenticated by certificate pinning: every replica serves the same certificate (one Secret), so
    the peer must present exactly ours. The standby authenticates with the bearer token kube-apiserver uses; with
    client-certificate authentication only there is nothing to present, so nothing is relayed and the API server
    retries until its batch reaches the leader (docs/ha.md)."""

    def __init__(
        self, leads: Callable[[], bool], leader_url: Callable[[], str | None], cert_file: str, token_file: str
    ) -> None:
        self.leads = leads
        self.leader_url = leader_url
        self.token = TokenFile(token_file) if token_file else None
        with open(cert_file) as handle:
            self.pinned = ssl.PEM_cert_to_DER_cert(handle.read())
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False  # the pin below is stricter than a name check
        self.context.verify_mode = ssl.CERT_NONE

    def __call__(self, body: bytes) -> bool | None:
        if self.leads():
            return None
        url = self.leader_url()
        token = self.token.current() if self.token is not None else b""
        if not url or not token:
            return False
        try:
            return self._post(url, body, token.decode())
        except (OSError, http.client.HTTPException, ValueError) as error:
            logger.debug(f"Audit batch not relayed to the leader at {url}: {error}")
            return False

    def _post(self, url: str, body: bytes, token: str) -> bool:
        target = urlsplit(url)
        connection = http.client.HTTPSConnection(
            str(target.hostname), target.port or 443, context=self.context, timeout=RELAY_TIMEOUT_SECONDS
        )
        try:
            connection.connect()
            assert connection.sock is not None
            if connection.sock.getpeercert(binary_form=True) != self.pinned:
                raise ValueError("the peer does not present this release's audit webhook certificate")
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                RELAYED_HEADER: "1",
            }
            connection.request("POST", target.path or AUDIT_PATH, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()
