"""Key material for the local control plane, made with the openssl command line tool."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ControlPlaneCerts:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(directory: Path) -> ControlPlaneCerts:
    directory.mkdir(parents=True, exist_ok=True)
    certs = ControlPlaneCerts(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    _openssl("genrsa", "-out", str(certs.ca_key), "2048")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(certs.ca_key),
        "-days",
        "30",
        "-subj",
        "/CN=access-hygiene-local-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        str(certs.ca_cert),
    )
    csr = directory / "apiserver.csr"
    _openssl("genrsa", "-out", str(certs.serving_key), "2048")
    _openssl("req", "-new", "-key", str(certs.serving_key), "-subj", "/CN=kube-apiserver", "-out", str(csr))
    ext = directory / "apiserver.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(certs.ca_cert),
        "-CAkey",
        str(certs.ca_key),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        str(ext),
        "-out",
        str(certs.serving_cert),
    )
    _openssl("genrsa", "-out", str(certs.sa_key), "2048")
    _openssl("rsa", "-in", str(certs.sa_key), "-pubout", "-out", str(certs.sa_pub))
    return certs


@dataclass(frozen=True)
class AuditWebhookCerts:
    """The operator's audit webhook on loopback: its serving pair, and a client pair kube-apiserver presents."""

    serving_cert: Path
    serving_key: Path
    client_cert: Path
    client_key: Path


def _issue(directory: Path, ca: ControlPlaneCerts, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, cert, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "crt", "csr", "ext"))
    _openssl("genrsa", "-out", str(key), "2048")
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text(extensions)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key), "-CAcreateserial",
             "-days", "30", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


def make_audit_webhook_certs(directory: Path, ca: ControlPlaneCerts) -> AuditWebhookCerts:
    """Both pairs signed by the control plane's CA (the webhook kubeconfig trusts it; the operator checks the
    client certificate against it)."""
    directory.mkdir(parents=True, exist_ok=True)
    serving_cert, serving_key = _issue(
        directory, ca, "audit-webhook", "/CN=access-hygiene-audit-webhook",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )  # fmt: skip
    client_cert, client_key = _issue(
        directory, ca, "audit-webhook-client", "/CN=kube-apiserver-audit",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )  # fmt: skip
    return AuditWebhookCerts(serving_cert, serving_key, client_cert, client_key)


CLIENT_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
)


def issue_client_cert(
    directory: Path, ca: ControlPlaneCerts, name: str, user: str, groups: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A client certificate (cert, key) signed by the control plane's CA: the API server reads `user` from the
    common name and `groups` from the organizations."""
    directory.mkdir(parents=True, exist_ok=True)
    subject = f"/CN={user}" + "".join(f"/O={group}" for group in groups)
    return _issue(directory, ca, name, subject, CLIENT_EXTENSIONS)
