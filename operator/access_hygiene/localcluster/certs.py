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
