"""Two (or more) `access-hygiene run` processes under identities of their own, electing a leader on a Lease: what
tests/cluster/test_ha.py and benchmarks/ha_benchmark.py share."""

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes

from access_hygiene.clock import parse_instant
from access_hygiene.k8s.usage_mirror import MIRROR_PATH, pinned_socket
from access_hygiene.localcluster.certs import make_audit_webhook_certs, make_certs
from access_hygiene.localcluster.controlplane import ControlPlane, free_port
from tests.audit_log import audit_log_events

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "access_hygiene.cli.main"]
OPERATOR_NAMESPACE = "access-hygiene"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
LEASE_DURATION = 15.0  # as shipped (settings, chart)
# The standby takes an unrenewed Lease lease_duration after it *saw* the last renewal (client-go's semantics: its
# own clock), which came at most a retry period (2 s) before the kill: 13-15 s after it, plus the latency of writing
# the Lease when the kill lands just after a renewal. benchmarks/ha_benchmark.py measured 13.07-15.04 s (p50 14.33)
# on this 2-core machine; the bound leaves that write 0.5 s.
KILL_TAKEOVER_WITHIN = LEASE_DURATION + 0.5
RETRY_PERIOD = 2.0  # as shipped
# Tests wait this long for a takeover before calling it a hang: the takeover's speed is the benchmark's to measure
# (a loaded 2-core CI machine can add seconds to any of the waits it is made of).
TAKEOVER_HANG_BOUND = 3 * LEASE_DURATION


def ensure_namespace(api: kubernetes.client.ApiClient, name: str) -> None:
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise


def replica_kubeconfig(control_plane: ControlPlane, api: kubernetes.client.ApiClient, name: str) -> tuple[Path, str]:
    """A ServiceAccount of its own (cluster-admin, like the operator's test identity), its token in a kubeconfig:
    the audit log tells each replica's requests apart by user name."""
    core = kubernetes.client.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(OPERATOR_NAMESPACE, {"metadata": {"name": name}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    binding = {
        "metadata": {"name": f"{name}-{OPERATOR_NAMESPACE}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}],
    }
    try:
        kubernetes.client.RbacAuthorizationV1Api(api).create_cluster_role_binding(binding)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
    request = {"spec": {"audiences": [], "expirationSeconds": 86400}}
    token = core.create_namespaced_service_account_token(name, OPERATOR_NAMESPACE, request).status.token
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{name}"
    path = Path(str(control_plane.workdir)) / f"kubeconfig-{name}"
    path.write_text(control_plane.render_kubeconfig(token, user))
    return path, user


def remove_replica_identity(api: kubernetes.client.ApiClient, name: str) -> None:
    """What replica_kubeconfig() made, gone: its cluster-admin binding is a finding (AH-RBAC-001) in every later
    scan of a shared cluster, and counts of findings there would start from it."""
    for delete, args in (
        (kubernetes.client.RbacAuthorizationV1Api(api).delete_cluster_role_binding, (f"{name}-{OPERATOR_NAMESPACE}",)),
        (kubernetes.client.CoreV1Api(api).delete_namespaced_service_account, (name, OPERATOR_NAMESPACE)),
    ):
        try:
            delete(*args)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise


@dataclass
class Replica:
    name: str
    user: str
    kubeconfig: Path
    lease: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log_start: int = 0  # where this run's lines begin in the appended log

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT / "operator"),
            "KUBECONFIG": str(self.kubeconfig),
            "ACCESS_HYGIENE_MODE": "audit",
            "ACCESS_HYGIENE_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "ACCESS_HYGIENE_METRICS_PORT": str(self.port),
            "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
            "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "3600",
            "ACCESS_HYGIENE_LEADER_ELECTION_ENABLED": "true",
            "ACCESS_HYGIENE_LEADER_ELECTION_LEASE_NAME": self.lease,
            "ACCESS_HYGIENE_LEADER_ELECTION_IDENTITY": self.name,
            **self.env,
        }
        # The log is appended across restarts: this run's lines start here (synced() reads only those).
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*CLI, "run", "--liveness", ""], stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def gauge(self, name: str, **labels: str) -> float | None:
        text = self.metrics()
        if text is None:
            return None
        return metric_sum(text, name, **labels)

    def synced(self) -> bool:
        """This run of the replica (not an earlier one in the same log) has synced its watch cache."""
        return self.logged(b"reacting to events")

    def logged(self, text: bytes) -> bool:
        """`text` is in what this run of the replica wrote (not an earlier run in the same appended log)."""
        with self.log.open("rb") as log:
            log.seek(self._log_start)
            return text in log.read()


def metric_sum(text: str, name: str, **labels: str) -> float | None:
    total, found = 0.0, False
    for line in text.splitlines():
        if not (line.startswith((name + "{", name + " "))):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def lease_holder(api: kubernetes.client.ApiClient, lease: str) -> str:
    try:
        body = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(lease, OPERATOR_NAMESPACE)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(body.spec.holder_identity or "")


def new_lease_name() -> str:
    return f"ha-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Request:
    at: datetime
    user: str
    verb: str
    resource: str
    namespace: str
    name: str
    code: int


def audit_requests(audit_log: Path, users: set[str]) -> list[Request]:
    """The users' requests from the API server's audit log (ResponseComplete), in order of receipt."""
    found = []
    for event in audit_log_events(audit_log):
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] not in users:
            continue
        ref = event.get("objectRef") or {}
        found.append(
            Request(
                at=parse_instant(event["requestReceivedTimestamp"]),
                user=event["user"]["username"],
                verb=event["verb"],
                resource=str(ref.get("resource") or ""),
                namespace=str(ref.get("namespace") or ""),
                name=str(ref.get("name") or ""),
                code=int((event.get("responseStatus") or {}).get("code") or 0),
            )
        )
    return sorted(found, key=lambda r: r.at)


def writes_without_the_lease(requests: list[Request], lease: str) -> list[Request]:
    """Writes (other than the Lease's own) by a user who did not hold the Lease when the API server received them:
    the holder is whoever last wrote the Lease successfully (only a holder, or a taker, can)."""
    holder = ""
    offending = []
    for request in requests:
        if request.resource == "leases" and request.name == lease:
            if request.verb in ("create", "update") and request.code < 300:
                holder = request.user
            continue
        asked = request.resource.endswith("reviews")  # a question (who am I, may I), nothing stored
        if request.verb in WRITE_VERBS and not asked and request.user != holder:
            offending.append(request)
    return offending


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> float:
    """Seconds until predicate() is truthy; AssertionError after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s")


# The audit webhook on every replica (docs/ha.md): one serving certificate and one token for the release, a port
# of each replica's own, the address each advertises on the Lease while it leads.
AUDIT_WEBHOOK_ANNOTATION = "accesshygiene.io/audit-webhook"


@dataclass(frozen=True)
class Webhook:
    token: str
    cert: Path
    env: dict[str, str]

    def pinned(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # pinned below, as a standby pins the leader
        context.verify_mode = ssl.CERT_NONE
        return context

    def post(self, url: str, body: bytes) -> int:
        """POST an audit EventList as kube-apiserver's webhook backend does (bearer token)."""
        secure = pinned_socket(url, self.context(), self.pinned(), 10.0)
        target = url.split("/", 3)
        connection = http.client.HTTPSConnection(target[2])
        connection.sock = secure
        try:
            connection.request("POST", "/audit", body, {"Authorization": f"Bearer {self.token}"})
            return connection.getresponse().status
        finally:
            connection.close()

    def counters(self, url: str) -> dict[str, Any]:
        """The usage counters of the replica at `url` as it hands them to a standby (the mirror's snapshot)."""
        secure = pinned_socket(url, self.context(), self.pinned(), 10.0)
        try:
            host = url.split("/", 3)[2]
            secure.sendall(f"GET {MIRROR_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {self.token}\r\n"
                           "X-Access-Hygiene-Replica: test\r\n\r\n".encode())  # fmt: skip
            stream = secure.makefile("rb")
            status = stream.readline()
            assert status.split()[1] == b"200", status
            while stream.readline().strip():
                pass
            return dict(json.loads(stream.readline()))
        finally:
            secure.close()


def make_webhook(directory: Path) -> Webhook:
    certs = make_audit_webhook_certs(directory / "webhook", make_certs(directory / "pki"))
    token = uuid.uuid4().hex
    token_file = directory / "webhook-token"
    token_file.write_text(token)
    env = {
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_ENABLED": "true",
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_ADDR": "127.0.0.1",
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_PORT": "0",
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_ADVERTISE_HOST": "127.0.0.1",
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_CERT_FILE": str(certs.serving_cert),
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_KEY_FILE": str(certs.serving_key),
        "ACCESS_HYGIENE_AUDIT_WEBHOOK_TOKEN_FILE": str(token_file),
    }
    return Webhook(token, certs.serving_cert, env)


def advertised_webhook(api: kubernetes.client.ApiClient, lease: str) -> str | None:
    body = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(lease, OPERATOR_NAMESPACE)
    return (body.metadata.annotations or {}).get(AUDIT_WEBHOOK_ANNOTATION)
