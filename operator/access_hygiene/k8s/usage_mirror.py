"""Usage counters that survive a leader change: the leader mirrors what it records to its standbys.

A standby subscribes to the leader's receiver (`GET /audit/mirror`, the address the leader advertises on the Lease,
its certificate pinned, the bearer token kube-apiserver uses). The leader answers with a snapshot of its counters,
then streams every batch it records, one JSON line each, in the order it recorded them; the standby applies each
to its own counters and acknowledges it with a line holding its sequence number. The leader answers kube-apiserver
only once every standby acknowledged the batch (or ACK_TIMEOUT_SECONDS passed: that standby is dropped and
subscribes again, with a new snapshot). So a batch the API server was told was received is in every following
standby's counters, and a standby that takes over starts from the old leader's counters.

Nothing is counted twice: a following standby's counters are the leader's (snapshot + the leader's stream), and it
does not count the batches it relays itself (they come back in the stream). While it follows no leader it counts
what it relays, and the next snapshot replaces that. The idle cost is one TLS connection and a heartbeat line
every HEARTBEAT_SECONDS: no API request. See docs/ha.md.
"""

import collections
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.engine.usage.replica import BATCH, HEARTBEAT, SNAPSHOT, batch_from_wire, batch_to_wire

logger = logging.getLogger(__name__)

MIRROR_PATH = "/audit/mirror"
HEARTBEAT_SECONDS = 5.0
# A follower that heard nothing for this long (no batch, no heartbeat) takes the leader for gone and reconnects.
FOLLOWER_READ_TIMEOUT_SECONDS = 3 * HEARTBEAT_SECONDS
ACK_TIMEOUT_SECONDS = 2.0
RECONNECT_SECONDS = 1.0
MAX_FRAME_BYTES = 256 * 1024 * 1024  # a snapshot at the counters' caps (5,000 subjects x 128 keys) is ~50 MiB


class SubscriptionClosedError(Exception):
    """The subscription ended (dropped for a missed acknowledgement, or the replica stopped leading)."""


class Subscription:
    """One following standby, on the leader: the frames waiting to be sent and the last acknowledged one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._acked = 0
        self._closed = False
        self._changed = threading.Condition()

    def push(self, sequence: int, line: bytes) -> None:
        with self._changed:
            self._frames.append((sequence, line))
            self._changed.notify_all()

    def next_frame(self, timeout: float) -> tuple[int, bytes] | None:
        """The next frame to send; None when none came within `timeout` (send a heartbeat)."""
        with self._changed:
            self._changed.wait_for(lambda: self._frames or self._closed, timeout)
            if self._closed:
                raise SubscriptionClosedError(self.name)
            return self._frames.popleft() if self._frames else None

    def ack(self, sequence: int) -> None:
        with self._changed:
            self._acked = max(self._acked, sequence)
            self._changed.notify_all()

    def wait_acked(self, sequence: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._acked >= sequence or self._closed, max(0.0, timeout)) and (
                self._acked >= sequence
            )

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


Pending = list[tuple[Subscription, int]]


class MirrorHub:
    """The leader's side: who follows, and what each must acknowledge. `publish` runs under the counters' lock
    (the caller's), so the stream is in the order the counters changed, and a snapshot taken under the same lock
    is followed by exactly the batches recorded after it."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._sequence = 0
        self._guard = threading.Lock()

    def subscribe(self, name: str) -> Subscription:
        """Called under the counters' lock, with the snapshot taken under the same hold."""
        subscription = Subscription(name)
        with self._guard:
            self._subscriptions.add(subscription)
        logger.info(f"Audit usage mirror: {name} follows this replica's counters.")
        return subscription

    def remove(self, subscription: Subscription) -> None:
        subscription.close()
        with self._guard:
            self._subscriptions.discard(subscription)

    def publish(self, requests: list[AuditRequest]) -> Pending:
        with self._guard:
            if not self._subscriptions:
                return []
            self._sequence += 1
            line = json.dumps(batch_to_wire(self._sequence, requests), separators=(",", ":")).encode() + b"\n"
            for subscription in self._subscriptions:
                subscription.push(self._sequence, line)
            return [(subscription, self._sequence) for subscription in self._subscriptions]

    def wait(self, pending: Pending, timeout: float = ACK_TIMEOUT_SECONDS) -> int:
        """Wait until every follower acknowledged its batch; one that does not within `timeout` is dropped (it
        subscribes again and gets a fresh snapshot). Returns how many were dropped."""
        deadline = time.monotonic() + timeout
        dropped = 0
        for subscription, sequence in pending:
            if not subscription.wait_acked(sequence, deadline - time.monotonic()):
                if not subscription.closed:
                    logger.warning(
                        f"Audit usage mirror: {subscription.name} did not acknowledge a batch within {timeout:g} s; "
                        "dropped (it resubscribes)."
                    )
                self.remove(subscription)
                dropped += 1
        return dropped

    def close_all(self) -> None:
        with self._guard:
            subscriptions, self._subscriptions = list(self._subscriptions), set()
        for subscription in subscriptions:
            subscription.close()

    @property
    def followers(self) -> int:
        with self._guard:
            return len(self._subscriptions)


def pinned_socket(url: str, context: ssl.SSLContext, pinned: bytes, timeout: float) -> ssl.SSLSocket:
    """A TLS connection to `url`'s host that presents exactly the pinned certificate (DER), else ValueError."""
    target = urlsplit(url)
    raw = socket.create_connection((str(target.hostname), target.port or 443), timeout=timeout)
    try:
        secure = context.wrap_socket(raw)
    except BaseException:
        raw.close()
        raise
    if secure.getpeercert(binary_form=True) != pinned:
        secure.close()
        raise ValueError("the peer does not present this release's audit webhook certificate")
    return secure


class MirrorFollower:
    """The standby's side, in a thread of its own: follow whichever replica the Lease says leads (reconnect when
    that changes), and stop following while this replica leads."""

    def __init__(
        self,
        name: str,
        leads: Callable[[], bool],
        leader_url: Callable[[], str | None],
        token: Callable[[], bytes],
        context: ssl.SSLContext,
        pinned: bytes,
        apply_snapshot: Callable[[dict[str, Any]], bool],
        apply_batch: Callable[[list[AuditRequest]], bool],
        unfollow: Callable[[], None],
    ) -> None:
        self.name = name
        self.leads = leads
        self.leader_url = leader_url
        self.token = token
        self.context = context
        self.pinned = pinned
        self.apply_snapshot = apply_snapshot
        self.apply_batch = apply_batch
        self.unfollow = unfollow
        self._stopping = threading.Event()
        self._socket: ssl.SSLSocket | None = None
        self._thread: threading.Thread | None = None
        self.snapshots = 0  # snapshots applied (tests, logs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="access-hygiene-usage-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            if self._socket is not None:
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            url = None if self.leads() else self.leader_url()
            token = self.token()
            if not url or not token:
                self._stopping.wait(RECONNECT_SECONDS)
                continue
            try:
                self._follow(url, token)
            except (OSError, ValueError, KeyError, TypeError) as error:  # a lost connection, a torn frame
                logger.debug(f"Audit usage mirror from {url} ended: {error}")
            finally:
                self.unfollow()
            self._stopping.wait(RECONNECT_SECONDS)

    def _follow(self, url: str, token: bytes) -> None:
        secure = pinned_socket(url, self.context, self.pinned, FOLLOWER_READ_TIMEOUT_SECONDS)
        self._socket = secure
        try:
            target = urlsplit(url)
            request = (
                f"GET {MIRROR_PATH} HTTP/1.1\r\nHost: {target.netloc}\r\nAuthorization: Bearer {token.decode()}\r\n"
                f"X-Access-Hygiene-Replica: {self.name}\r\n\r\n"
            )
            secure.sendall(request.encode())
            stream = secure.makefile("rb")
            status = stream.readline(1024).split()
            if len(status) < 2 or status[1] != b"200":
                logger.debug(f"Audit usage mirror from {url}: {b' '.join(status[1:]).decode(errors='replace')}")
                return
            while stream.readline(8192).strip():  # headers
                pass
            while not self._stopping.is_set():
                line = stream.readline(MAX_FRAME_BYTES)
                if not line.endswith(b"\n"):
                    return  # the leader went away (or a frame over the limit)
                if self.leads() or self.leader_url() != url:
                    return
                frame = json.loads(line)
                kind = frame.get("kind")
                if kind == SNAPSHOT:
                    if not self.apply_snapshot(frame):
                        return
                    self.snapshots += 1
                    logger.info(f"Audit usage mirror: following the leader's counters at {url}.")
                elif kind == BATCH:
                    sequence, requests = batch_from_wire(frame)
                    if not self.apply_batch(requests):
                        return
                    secure.sendall(f"{sequence}\n".encode())
                elif kind != HEARTBEAT:
                    raise ValueError(f"unknown mirror frame {kind!r}")
        finally:
            self._socket = None
            with contextlib.suppress(OSError):
                secure.close()
