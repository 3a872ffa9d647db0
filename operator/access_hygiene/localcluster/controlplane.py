"""Start and stop etcd + kube-apiserver + kube-controller-manager on loopback, on free ports."""

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from access_hygiene.localcluster import watchdog
from access_hygiene.localcluster.certs import (
    AuditWebhookCerts,
    ControlPlaneCerts,
    issue_client_cert,
    make_audit_webhook_certs,
    make_certs,
)

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
ADMIN_USER = "local-admin"
# A second admin identity for the operator under test, so the audit log tells its requests apart.
OPERATOR_USER = "access-hygiene-operator"
# A user with no groups beyond system:authenticated: tests grant it roles (e.g. `edit` in one namespace).
EDITOR_USER = "local-editor"
SERVICE_CIDR = "10.96.0.0/16"
# Stop order, for ControlPlane.stop() and the watchdog: the API server and the controllers, then their storage.
_STOP_ORDER = {"kube-apiserver": 0, "kube-controller-manager": 0, "etcd": 1}

_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""
# With only the audit webhook on: ServiceAccounts' requests are what continuous mode reads; the rest is not sent.
_WEBHOOK_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
AUDIT_WEBHOOK_PATH = "/audit"


@dataclass(frozen=True)
class AuditWebhookEndpoint:
    """Where kube-apiserver sends audit events (the operator must serve there), and the credentials."""

    port: int
    token: str
    token_file: Path
    certs: AuditWebhookCerts
    ca_cert: Path
    kubeconfig: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{AUDIT_WEBHOOK_PATH}"

    def operator_env(self) -> dict[str, str]:
        """The operator's settings for serving this endpoint (token and client certificate both required)."""
        return {
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_ENABLED": "true",
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_ADDR": "127.0.0.1",
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_PORT": str(self.port),
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_CERT_FILE": str(self.certs.serving_cert),
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_KEY_FILE": str(self.certs.serving_key),
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_TOKEN_FILE": str(self.token_file),
            "ACCESS_HYGIENE_AUDIT_WEBHOOK_CLIENT_CA_FILE": str(self.ca_cert),
        }


def render_audit_webhook_kubeconfig(url: str, ca_cert: Path, token: str, client_cert: Path, client_key: Path) -> str:
    """The kubeconfig kube-apiserver's --audit-webhook-config-file reads: the server is the webhook."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "access-hygiene", "cluster": {"server": url, "certificate-authority": str(ca_cert)}}],
        "users": [
            {
                "name": "kube-apiserver",
                "user": {"token": token, "client-certificate": str(client_cert), "client-key": str(client_key)},
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "access-hygiene", "user": "kube-apiserver"}}],
        "current-context": "default",
    }
    return json.dumps(config, indent=2)


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached."""


def _repo_build_script() -> Path | None:
    # operator/access_hygiene/localcluster/controlplane.py -> repo root is parents[3]
    script = Path(__file__).resolve().parents[3] / "controlplane" / "build.sh"
    return script if script.is_file() else None


def find_binaries(build: bool = True) -> Path:
    """The directory holding etcd, kube-apiserver and kube-controller-manager (and helm).

    ACCESS_HYGIENE_BIN_DIR wins; otherwise controlplane/build.sh is run, which is a no-op
    when its cache under ~/.cache/access-hygiene is complete.
    """
    explicit = os.environ.get("ACCESS_HYGIENE_BIN_DIR")
    if explicit:
        bin_dir = Path(explicit)
    else:
        script = _repo_build_script()
        if script is None:
            raise ControlPlaneError("set ACCESS_HYGIENE_BIN_DIR: controlplane/build.sh is not next to this package")
        if not build:
            raise ControlPlaneError("control plane binaries are not built; run controlplane/build.sh")
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ControlPlaneError(f"controlplane/build.sh failed:\n{result.stderr[-4000:]}")
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in BINARIES if not (bin_dir / name).is_file()]
    if missing:
        raise ControlPlaneError(f"missing control plane binaries in {bin_dir}: {', '.join(missing)}")
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class ControlPlane:
    """A real control plane. Use as a context manager, or call start() and stop()."""

    bin_dir: Path | None = None
    workdir: Path | None = None
    audit_log: bool = False
    # Send audit events to the operator's audit webhook (continuous mode) on this port (0: a free one).
    audit_webhook: bool = False
    audit_webhook_port: int = 0
    start_timeout: float = 90.0
    keep_workdir: bool = False
    # Serve a node (localcluster/node.py): kube-apiserver advertises this address (the endpoint of the `kubernetes`
    # Service, which the node relays to loopback), authorizes kubelets with the Node authorizer and NodeRestriction,
    # and presents a client certificate to kubelets (logs, exec). None, the default, changes nothing.
    advertise_address: str | None = None
    api_port: int = 0
    kubeconfig: Path = field(init=False)
    operator_kubeconfig: Path = field(init=False)
    admin_token: str = field(init=False, default="")
    operator_token: str = field(init=False, default="")
    editor_token: str = field(init=False, default="")
    server: str = field(init=False, default="")
    webhook: AuditWebhookEndpoint | None = field(init=False, default=None)
    _processes: list[_Process] = field(init=False, default_factory=list)
    _owns_workdir: bool = field(init=False, default=False)
    _certs: ControlPlaneCerts | None = field(init=False, default=None)
    _etcd_url: str = field(init=False, default="")
    _kubelet_client: tuple[Path, Path] | None = field(init=False, default=None)
    _watchdog: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _watchdog_pipe: IO[str] | None = field(init=False, default=None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def ca_cert(self) -> Path:
        assert self._certs is not None
        return self._certs.ca_cert

    @property
    def certs(self) -> ControlPlaneCerts:
        """The CA (which signs node components' client certificates), serving and service account keys."""
        assert self._certs is not None
        return self._certs

    @property
    def audit_log_path(self) -> Path:
        return self._dir / "audit.log"

    @property
    def _dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    def start(self) -> None:
        bin_dir = self.bin_dir or find_binaries()
        self.bin_dir = bin_dir
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="access-hygiene-cp-"))
            self._owns_workdir = True
        self._dir.mkdir(parents=True, exist_ok=True)
        self._certs = make_certs(self._dir / "pki")
        self.admin_token = secrets.token_hex(24)
        self.operator_token = secrets.token_hex(24)
        self.editor_token = secrets.token_hex(24)
        (self._dir / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},local-admin-uid,"system:masters"\n'
            f'{self.operator_token},{OPERATOR_USER},operator-uid,"system:masters"\n'
            f"{self.editor_token},{EDITOR_USER},editor-uid\n"
        )
        if self.audit_webhook:
            self.webhook = self._prepare_audit_webhook(self._certs)
        if self.advertise_address is not None:
            self._kubelet_client = issue_client_cert(
                self._dir / "pki", self._certs, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                ("system:masters",),
            )  # fmt: skip
        try:
            self._start_watchdog()
            etcd_url = self._start_etcd(bin_dir)
            self._start_apiserver(bin_dir, etcd_url)
            self._start_controller_manager(bin_dir)
        except BaseException:
            self.stop()
            raise

    def _prepare_audit_webhook(self, certs: ControlPlaneCerts) -> AuditWebhookEndpoint:
        port = self.audit_webhook_port or free_port()
        token = secrets.token_hex(24)
        token_file = self._dir / "audit-webhook.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        webhook_certs = make_audit_webhook_certs(self._dir / "pki" / "audit-webhook", certs)
        kubeconfig = self._dir / "audit-webhook.kubeconfig"
        url = f"https://127.0.0.1:{port}{AUDIT_WEBHOOK_PATH}"
        kubeconfig.write_text(
            render_audit_webhook_kubeconfig(
                url, certs.ca_cert, token, webhook_certs.client_cert, webhook_certs.client_key
            )
        )
        return AuditWebhookEndpoint(port, token, token_file, webhook_certs, certs.ca_cert, kubeconfig)

    def _start_watchdog(self) -> None:
        """The watchdog (watchdog.py): it stops the children in order once this process is gone, even when it
        was SIGKILLed and could not stop them itself. It reads the children's PIDs from a pipe whose only
        write end this process holds (os.pipe() is close-on-exec): end of file means we are gone or done."""
        read_end, write_end = os.pipe()
        try:
            with (self._dir / "watchdog.log").open("ab") as log:
                self._watchdog = subprocess.Popen(
                    [sys.executable, watchdog.__file__, str(self._dir / "watchdog.log"), "2"],
                    stdin=read_end, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._watchdog_pipe = os.fdopen(write_end, "w", buffering=1)

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log_path = self._dir / f"{name}.log"
        log_file = log_path.open("ab")
        # A session of its own: Ctrl-C or a hangup in a terminal reaches only us, and we stop the children in
        # order; if we die without doing so, the watchdog does.
        popen = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        process = _Process(name, popen, log_path, log_file)
        self._processes.append(process)
        if self._watchdog_pipe is not None:
            # Not reaped yet (no poll() so far), so the PID is still this child's when its start time is read.
            start_time = watchdog.process_start_time(popen.pid) or "-"
            with contextlib.suppress(OSError):
                self._watchdog_pipe.write(f"{_STOP_ORDER.get(name, 0)} {popen.pid} {start_time} {name}\n")
        return process

    def _start_etcd(self, bin_dir: Path) -> str:
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        process = self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                f"--data-dir={self._dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # test data: durability is not needed, speed is
                "--log-level=warn",
            ],
        )
        self._wait(process, lambda: _http_ok(f"{client_url}/health"), "etcd /health")
        self._etcd_url = client_url
        return client_url

    def restart_apiserver(self, down_seconds: float = 0.0) -> None:
        """Kill kube-apiserver (a crash, not a graceful stop), keep it down for a while, start it again on the
        same port (outage tests)."""
        process = next(p for p in self._processes if p.name == "kube-apiserver")
        process.popen.kill()
        process.popen.wait(timeout=30)
        process.log_file.close()
        self._processes.remove(process)
        time.sleep(down_seconds)
        assert self.bin_dir is not None
        assert self._etcd_url
        self._start_apiserver(self.bin_dir, self._etcd_url)

    def _start_apiserver(self, bin_dir: Path, etcd_url: str) -> None:
        certs = self._certs
        assert certs is not None
        self.api_port = self.api_port or free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        args = [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--advertise-address={self.advertise_address or '127.0.0.1'}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self._dir / 'apiserver-certs'}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--token-auth-file={self._dir / 'tokens.csv'}",
            f"--authorization-mode={'RBAC' if self.advertise_address is None else 'Node,RBAC'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if self._kubelet_client is not None:
            args += [
                f"--kubelet-client-certificate={self._kubelet_client[0]}",
                f"--kubelet-client-key={self._kubelet_client[1]}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-admission-plugins=NodeRestriction",
            ]
        if self.audit_log or self.webhook is not None:
            policy = self._dir / "audit-policy.yaml"
            policy.write_text(_AUDIT_POLICY if self.audit_log else _WEBHOOK_AUDIT_POLICY)
            args.append(f"--audit-policy-file={policy}")
        if self.audit_log:
            args.append(f"--audit-log-path={self.audit_log_path}")
        if self.webhook is not None:
            # Batches of at most 1 s, retried soon: the operator may start after the API server.
            args += [
                f"--audit-webhook-config-file={self.webhook.kubeconfig}",
                "--audit-webhook-mode=batch",
                "--audit-webhook-batch-max-wait=1s",
                "--audit-webhook-initial-backoff=1s",
            ]
        process = self._spawn("kube-apiserver", args)
        self._wait(process, lambda: self._api_ok("/readyz"), "kube-apiserver /readyz")
        self.kubeconfig = self._dir / "kubeconfig"
        self.kubeconfig.write_text(self.render_kubeconfig(self.admin_token, ADMIN_USER))
        self.operator_kubeconfig = self._dir / "operator.kubeconfig"
        self.operator_kubeconfig.write_text(self.render_kubeconfig(self.operator_token, OPERATOR_USER))

    def _start_controller_manager(self, bin_dir: Path) -> None:
        certs = self._certs
        assert certs is not None
        process = self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                f"--service-account-private-key-file={certs.sa_key}",
                f"--root-ca-file={certs.ca_cert}",
                f"--cluster-signing-cert-file={certs.ca_cert}",
                f"--cluster-signing-key-file={certs.ca_key}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--v=1",
            ],
        )
        # The default ServiceAccount in "default" appears once the controllers run.
        self._wait(
            process,
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
            "kube-controller-manager (default ServiceAccount)",
        )

    def render_kubeconfig(self, token: str, user: str) -> str:
        """A kubeconfig for this control plane authenticating with a bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        return json.dumps(config, indent=2)

    def _api_ok(self, path: str) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        request = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait(self, process: _Process, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out after {self.start_timeout}s waiting for {what}:\n{process.tail()}")

    def logs(self, name: str, lines: int = 60) -> str:
        for process in self._processes:
            if process.name == name:
                return process.tail(lines)
        return ""

    def stop(self, grace: float = 2.0) -> None:
        """Stop everything within a few seconds: the API server and controllers together, then etcd; a process
        that ignores SIGTERM for `grace` seconds is killed. Every child is reaped (no zombies)."""
        orders = sorted({_STOP_ORDER.get(p.name, 0) for p in self._processes})
        for order in orders:
            group = [p for p in self._processes if _STOP_ORDER.get(p.name, 0) == order]
            for process in group:
                if process.popen.poll() is None:
                    process.popen.terminate()
            deadline = time.monotonic() + grace
            for process in group:
                try:
                    process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait(timeout=5)
        for process in self._processes:
            process.log_file.close()
        self._processes.clear()
        self._stop_watchdog()
        if self._owns_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_watchdog(self) -> None:
        """Close its pipe (end of file: every child is down already, so it just exits) and reap it."""
        if self._watchdog_pipe is not None:
            with contextlib.suppress(OSError):
                self._watchdog_pipe.close()
            self._watchdog_pipe = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait(timeout=5)
            self._watchdog = None


def why_not_serving(kubeconfig: Path, timeout: float = 2.0) -> str | None:
    """None when the API server of a kubeconfig that ControlPlane wrote answers /readyz; otherwise why not
    (`access-hygiene local --print-env` must not hand out the address of a control plane that has stopped)."""
    try:
        config = json.loads(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        server, ca = str(cluster["server"]), str(cluster["certificate-authority"])
        token = str(config["users"][0]["user"]["token"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        return f"{kubeconfig} is not a kubeconfig of the local default ({error.__class__.__name__}: {error})"
    request = urllib.request.Request(server + "/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        context = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"kube-apiserver at {server} answered /readyz with HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"kube-apiserver at {server} answered /readyz with HTTP {error.code}"
    except (urllib.error.URLError, OSError, ssl.SSLError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return f"nothing answers at {server} ({reason})"


def _http_ok(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
    return False
