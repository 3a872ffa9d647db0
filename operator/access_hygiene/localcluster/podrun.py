"""Run a Pod's container with podman the way a kubelet would, without a node.

The input is the Pod as the API server stored it (admission applied: the ServiceAccount plugin's projected token
volume, Pod Security checked, defaults filled in). `plan_container` turns it into `podman run` flags: the user and
groups of its security contexts, read-only root filesystem, capabilities, no-new-privileges, seccomp, resources,
env, args and volume mounts. `materialise_volumes` fills the volumes as the kubelet does: emptyDir as a fresh
directory, the projected ServiceAccount volume with a TokenRequest token bound to the Pod, the ConfigMap
kube-root-ca.crt and the namespace. `PodContainer` starts, probes and stops it (SIGTERM, then SIGKILL after the
Pod's terminationGracePeriodSeconds).

What differs from a node, on purpose: there is no CNI here, so the container shares the host network and reaches
the API server on loopback (KUBERNETES_SERVICE_HOST/PORT name it, as the kubelet's service env names the
`kubernetes` Service); the token is not refreshed (runs here are far shorter than its hour).

API calls use plain HTTPS with the caller's credentials: like the rest of localcluster, no kubernetes client.
"""

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from access_hygiene.localcluster.image import RLIMITS, ImageError, Podman

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The API's defaults, for a Pod spec that did not go through the API server.
DEFAULT_GRACE_SECONDS = 30
DEFAULT_PROJECTED_MODE = 0o644
_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and who asks: the local control plane's admin, for the kubelet's share of work."""

    server: str
    ca_cert: Path
    token: str

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.server + path, data=data, headers=headers, method=method)
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ImageError(f"{method} {path}: {error.code} {error.read().decode(errors='replace')}") from error


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("512Mi", "50m", "1.5") as a number of units."""
    text = str(value)
    for suffix, factor in _SUFFIXES.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    if text.endswith("m"):
        return Decimal(text[:-1]) / 1000
    return Decimal(text)


@dataclass(frozen=True)
class HttpProbe:
    """An httpGet probe with the kubelet's semantics: success is a status in [200, 400)."""

    path: str
    port: int
    scheme: str
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int

    @property
    def url(self) -> str:
        return f"{self.scheme.lower()}://127.0.0.1:{self.port}{self.path}"

    def check(self) -> bool:
        # The kubelet does not verify a probe's serving certificate.
        context = ssl._create_unverified_context() if self.scheme.upper() == "HTTPS" else None
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=context) as response:
                return bool(200 <= response.status < 400)
        except urllib.error.HTTPError as error:
            return 200 <= error.code < 400
        except (urllib.error.URLError, OSError):
            return False


@dataclass(frozen=True)
class ContainerPlan:
    """What `podman run` is given for one container of a Pod, and what the kubelet would do around it."""

    name: str
    run_args: list[str]  # after `podman run`: flags, image, container args
    grace_seconds: int
    ports: dict[str, int]  # containerPort by name
    liveness: HttpProbe | None
    readiness: HttpProbe | None


def _probe(spec: Mapping[str, Any] | None, ports: Mapping[str, int]) -> HttpProbe | None:
    if not spec:
        return None
    http = spec.get("httpGet")
    if http is None:
        raise ImageError(f"only httpGet probes are supported, got {sorted(spec)}")
    port = http["port"]
    if isinstance(port, str) and not port.isdigit():
        if port not in ports:
            raise ImageError(f"probe port {port!r} is not a named containerPort ({sorted(ports)})")
        port = ports[port]
    return HttpProbe(
        path=http.get("path", "/"),
        port=int(port),
        scheme=http.get("scheme", "HTTP"),
        initial_delay=float(spec.get("initialDelaySeconds", 0)),
        period=float(spec.get("periodSeconds", 10)),
        timeout=float(spec.get("timeoutSeconds", 1)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
    )


def _security_args(pod_context: Mapping[str, Any], container_context: Mapping[str, Any]) -> list[str]:
    merged = {**pod_context, **container_context}
    args = []
    user, group = merged.get("runAsUser"), merged.get("runAsGroup")
    if merged.get("runAsNonRoot"):
        if user is None:
            raise ImageError("runAsNonRoot without runAsUser: the image's user cannot be checked here")
        if int(user) == 0:
            raise ImageError("runAsNonRoot with runAsUser 0: the kubelet refuses to start this container")
    if user is not None:
        args.append(f"--user={user}" + (f":{group}" if group is not None else ""))
    # podman adds an /etc/passwd entry for the user; containerd (a real kubelet) does not: neither do we.
    args.append("--passwd=false")
    groups = list(pod_context.get("supplementalGroups", []))
    if "fsGroup" in pod_context:
        groups.append(pod_context["fsGroup"])
    args += [f"--group-add={gid}" for gid in groups]
    if merged.get("privileged"):
        args.append("--privileged")
    if merged.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if merged.get("readOnlyRootFilesystem"):
        # podman's --read-only adds writable tmpfs on /tmp, /var/tmp and /run unless told not to: a Pod gets none.
        args += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = merged.get("capabilities") or {}
    args += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
    args += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
    seccomp = (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":  # RuntimeDefault: podman's default profile
        raise ImageError(f"seccompProfile {seccomp} is not supported here")
    return args


def _resource_args(resources: Mapping[str, Any]) -> list[str]:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    args = []
    if "memory" in limits:
        args.append(f"--memory={int(parse_quantity(limits['memory']))}")
    if "cpu" in limits:
        args.append(f"--cpus={parse_quantity(limits['cpu'])}")
    if "cpu" in requests:  # the kubelet's cgroup v1 mapping: shares = millicores * 1024 // 1000, at least 2
        shares = (parse_quantity(requests["cpu"]) * 1024).to_integral_value(ROUND_FLOOR)
        args.append(f"--cpu-shares={max(2, int(shares))}")
    return args


def _env_args(env: list[Mapping[str, Any]], pod: Mapping[str, Any]) -> list[str]:
    fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"]}
    args = []
    for variable in env:
        if "valueFrom" in variable:
            field_path = (variable["valueFrom"].get("fieldRef") or {}).get("fieldPath")
            if field_path not in fields:
                raise ImageError(f"env {variable['name']}: valueFrom {variable['valueFrom']} is not supported")
            value = fields[field_path]
        else:
            value = variable.get("value", "")
        args.append(f"--env={variable['name']}={value}")
    return args


def plan_container(
    pod: Mapping[str, Any],
    image: str,
    volume_dirs: Mapping[str, Path],
    extra_env: Mapping[str, str],
    name: str,
) -> ContainerPlan:
    """`podman run` flags for the Pod's only container (pure: volumes are already materialised)."""
    spec = pod["spec"]
    containers = spec["containers"]
    if len(containers) != 1 or spec.get("initContainers"):
        raise ImageError("only Pods with exactly one container (and no init containers) are supported")
    container = containers[0]
    ports = {port["name"]: int(port["containerPort"]) for port in container.get("ports", []) if "name" in port}
    args = [
        f"--name={name}",
        "--network=host",  # no CNI here: the API server is on loopback
        "--pull=never",
        *(f"--ulimit={limit}" for limit in RLIMITS),
        *_security_args(spec.get("securityContext") or {}, container.get("securityContext") or {}),
        *_resource_args(container.get("resources") or {}),
        # The kubelet's service env for the API server first; the container's own env may override it.
        *(f"--env={key}={value}" for key, value in extra_env.items()),
        *_env_args(container.get("env", []), pod),
    ]
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volume_dirs:
            raise ImageError(f"volume {mount['name']!r} was not materialised")
        if mount.get("subPath"):
            raise ImageError(f"volumeMount {mount['name']!r}: subPath is not supported")
        mode = "ro" if mount.get("readOnly") else "rw"
        args.append(f"--volume={volume_dirs[mount['name']]}:{mount['mountPath']}:{mode}")
    if container.get("workingDir"):
        args.append(f"--workdir={container['workingDir']}")
    if container.get("command"):
        args.append(f"--entrypoint={json.dumps(container['command'])}")
    grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
    args += [f"--stop-timeout={grace}", image, *container.get("args", [])]
    return ContainerPlan(
        name=name,
        run_args=args,
        grace_seconds=grace,
        ports=ports,
        liveness=_probe(container.get("livenessProbe"), ports),
        readiness=_probe(container.get("readinessProbe"), ports),
    )


def _write_files(directory: Path, files: Mapping[str, bytes], mode: int, group: int | None) -> None:
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
        if group is not None:
            os.chown(path, -1, group)


def _items(data: Mapping[str, bytes], items: list[Mapping[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items}


def _projected_files(api: ApiAccess, pod: Mapping[str, Any], sources: list[Mapping[str, Any]]) -> dict[str, bytes]:
    namespace, files = pod["metadata"]["namespace"], {}
    for source in sources:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            files[token["path"]] = request_pod_token(api, pod, token.get("audience"), token.get("expirationSeconds"))
        elif "configMap" in source:
            config = api.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{source['configMap']['name']}")
            data = {key: value.encode() for key, value in (config.get("data") or {}).items()}
            files.update(_items(data, source["configMap"].get("items")))
        elif "secret" in source:
            files.update(_secret_files(api, namespace, source["secret"]["name"], source["secret"].get("items")))
        elif "downwardAPI" in source:
            for item in source["downwardAPI"]["items"]:
                field_path = (item.get("fieldRef") or {}).get("fieldPath")
                if field_path not in ("metadata.namespace", "metadata.name"):
                    raise ImageError(f"downwardAPI {item} is not supported")
                files[item["path"]] = str(pod["metadata"][field_path.split(".")[1]]).encode()
        else:
            raise ImageError(f"projected source {sorted(source)} is not supported")
    return files


def _secret_files(api: ApiAccess, namespace: str, name: str, items: list[Mapping[str, Any]] | None) -> dict[str, bytes]:
    secret = api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    return _items(data, items)


def request_pod_token(
    api: ApiAccess, pod: Mapping[str, Any], audience: str | None, expiration_seconds: int | None
) -> bytes:
    """A token for the Pod's ServiceAccount bound to the Pod (TokenRequest with boundObjectRef), as the kubelet gets."""
    metadata = pod["metadata"]
    account = pod["spec"].get("serviceAccountName") or "default"
    spec: dict[str, Any] = {
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"], "uid": metadata["uid"]},
        "expirationSeconds": expiration_seconds or 3607,
    }
    if audience:
        spec["audiences"] = [audience]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{metadata['namespace']}/serviceaccounts/{account}/token"
    return str(api.request("POST", path, body)["status"]["token"]).encode()


def materialise_volumes(api: ApiAccess, pod: Mapping[str, Any], root: Path) -> dict[str, Path]:
    """Each of the Pod's volumes as a host directory under `root`, filled and owned the way the kubelet does."""
    group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    directories = {}
    for volume in pod["spec"].get("volumes", []):
        directory = root / volume["name"]
        directory.mkdir(parents=True)
        if "emptyDir" in volume:
            if volume["emptyDir"].get("medium"):
                raise ImageError(f"emptyDir medium {volume['emptyDir']['medium']} is not supported")
            directory.chmod(0o777)
            if group is not None:  # fsGroup: group-owned, setgid so new files stay in the group
                os.chown(directory, -1, group)
                directory.chmod(0o2777)
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", DEFAULT_PROJECTED_MODE)
            _write_files(directory, _projected_files(api, pod, volume["projected"]["sources"]), mode, group)
        elif "secret" in volume:
            files = _secret_files(api, pod["metadata"]["namespace"], volume["secret"]["secretName"],
                                  volume["secret"].get("items"))  # fmt: skip
            _write_files(directory, files, volume["secret"].get("defaultMode", DEFAULT_PROJECTED_MODE), group)
        else:
            raise ImageError(f"volume {volume['name']!r}: type {sorted(set(volume) - {'name'})} is not supported")
        directories[volume["name"]] = directory
    return directories


@dataclass(frozen=True)
class Stopped:
    seconds: float  # from SIGTERM to the container's exit
    exit_code: int
    killed: bool  # SIGKILLed after the grace period: it did not stop on SIGTERM


@dataclass
class PodContainer:
    """One running container of a plan. Use as a context manager: it is removed on exit."""

    podman: Podman
    plan: ContainerPlan
    started: float = field(init=False, default=0.0)  # time.monotonic() at `podman run`

    def __enter__(self) -> "PodContainer":
        self.podman.run("rm", "--force", self.plan.name, check=False)
        self.started = time.monotonic()
        self.podman.run("run", "--detach", *self.plan.run_args)
        return self

    def __exit__(self, *exc: object) -> None:
        self.podman.run("rm", "--force", "--time=0", self.plan.name, check=False)

    def logs(self) -> str:
        result = self.podman.run("logs", self.plan.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.plan.name, *command, check=False)

    def inspect(self) -> dict[str, Any]:
        inspected: list[dict[str, Any]] = json.loads(self.podman.run("container", "inspect", self.plan.name).stdout)
        return inspected[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def probe_like_kubelet(self, probe: HttpProbe, timeout: float = 300) -> int:
        """Probe as the kubelet does (initial delay, period, failure threshold) until the first success.

        Returns how many probes failed before it; raises when the kubelet would have restarted the container
        (failureThreshold consecutive failures) or the container exited.
        """
        time.sleep(max(0.0, self.started + probe.initial_delay - time.monotonic()))
        failures = 0
        while time.monotonic() < self.started + timeout:
            if probe.check():
                return failures
            failures += 1
            if failures >= probe.failure_threshold:
                raise ImageError(f"{probe.url} failed {failures} times in a row: the kubelet would restart it")
            if not self.running():
                raise ImageError(f"the container exited before {probe.url} answered:\n{self.logs()[-4000:]}")
            time.sleep(probe.period)
        raise ImageError(f"{probe.url} did not answer within {timeout} s")

    def stop(self) -> Stopped:
        """SIGTERM, then SIGKILL after the grace period, as the kubelet does when a Pod is deleted."""
        began = time.monotonic()
        self.podman.run("stop", f"--time={self.plan.grace_seconds}", self.plan.name,
                        timeout=self.plan.grace_seconds + 60)  # fmt: skip
        seconds = time.monotonic() - began
        state = self.inspect()["State"]
        exit_code = int(state["ExitCode"])
        return Stopped(seconds, exit_code, killed=exit_code == 137 or bool(state.get("OOMKilled")))
