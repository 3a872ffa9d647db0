"""A real node for the local control plane.

containerd 2 + runc run the pods, kubelet registers the node, kube-scheduler places pods, kube-proxy (iptables)
implements Services, a CNI bridge connects pods, CoreDNS (a Deployment behind the kube-dns Service at 10.96.0.10)
resolves cluster.local, and kube-network-policies (a hostNetwork DaemonSet, as kind runs it) enforces
NetworkPolicies on packets through nfqueue. Images come from controlplane/node/build.sh's static binaries, packed by
node_images.py and imported into containerd: nothing is pulled.

Every address is inside this machine. The node's IP is a /32 on a bridge of its own (`ah-node0`), pods live on the
`ah-cni0` bridge (10.244.0.0/24), Services on 10.96.0.0/16 (routed to `ah-node0`). kube-apiserver keeps listening on
127.0.0.1; a relay (relay.py) serves it at API_ADDRESS from a network namespace of its own (`ah-apiserver`, a veth
to the host), the endpoint of the `kubernetes` Service: pods reach it at 10.96.0.1:443, and their packets to it are
forwarded like packets to an API server on another machine, so NetworkPolicies apply to them (traffic to the
host's own addresses never reaches a policy enforcer). Start the control plane with
`ControlPlane(advertise_address=API_ADDRESS)`.

Needs root (network, cgroups, mounts), runc and iptables from the distribution (`apt-get install runc iptables`).
One node runs on a machine at a time (a lock file). Host state it changes and what stop() does about it: the
bridges, iptables rules (kube-proxy --cleanup), the nftables table of kube-network-policies (removed by the
enforcer on SIGINT) and the sysctls kubelet sets (restored); net.ipv4.ip_forward is switched on and left on (other
container engines on the machine rely on it too).
"""

import contextlib
import ctypes
import fcntl
import json
import os
import re
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
from typing import IO, Any, Self

from access_hygiene.localcluster.certs import issue_client_cert
from access_hygiene.localcluster.controlplane import ControlPlane, _Process, free_port
from access_hygiene.localcluster.node_addons import CLUSTER_DOMAIN, DNS_SERVICE_IP, NFQUEUE_ID, render_addons
from access_hygiene.localcluster.node_images import ImageSpec, write_archive

NODE_NAME = "ah-node"
NODE_IP = "10.243.0.1"
API_ADDRESS = "10.243.0.2"
API_NETNS = "ah-apiserver"
API_VETH = "ah-api0"  # host side; its peer in API_NETNS holds API_ADDRESS
NODE_BRIDGE = "ah-node0"
POD_BRIDGE = "ah-cni0"
CLUSTER_CIDR = "10.244.0.0/16"
POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
CNI_NETWORK = "access-hygiene"
# The first packet of every connection from or to a pod goes to kube-network-policies' nfqueue (_divert_to_enforcer).
DIVERT_CHAIN = "AH-NETPOL"
DIVERT_RULES = (
    ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
    # Traffic the node's root processes start (kubelet probes) is not subject to policies (knp: meta skuid 0 accept).
    ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
    ["-s", CLUSTER_CIDR, "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ID)],
    ["-d", CLUSTER_CIDR, "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_ID)],
)
NODE_BINARIES = (
    "kubelet", "kube-proxy", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr", "coredns",
    "kube-network-policies", "agnhost", "pause", "cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap",
)  # fmt: skip
LOCK_PATH = Path(tempfile.gettempdir()) / "access-hygiene-node.lock"
CNI_RESULTS = Path("/var/lib/cni/results")  # libcni's cache: containerd does not make it configurable
# kubelet sets these (container_manager_linux.go setupKernelTunables); stop() puts the previous values back.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)  # fmt: skip
# Container rlimits stay under the host's hard limits (raising a hard limit needs CAP_SYS_RESOURCE).
CONTAINER_NOFILE = 4096
_MNT_DETACH = 2


class NodeError(RuntimeError):
    """The node could not be built, started or reached."""


def _repo_build_script() -> Path | None:
    script = Path(__file__).resolve().parents[3] / "controlplane" / "node" / "build.sh"
    return script if script.is_file() else None


def find_node_binaries(build: bool = True) -> Path:
    """The directory holding the node's binaries: ACCESS_HYGIENE_NODE_BIN_DIR, or controlplane/node/build.sh's
    cache (the script is a no-op once its cache is complete)."""
    explicit = os.environ.get("ACCESS_HYGIENE_NODE_BIN_DIR")
    if explicit:
        bin_dir = Path(explicit)
    else:
        script = _repo_build_script()
        if script is None:
            raise NodeError("set ACCESS_HYGIENE_NODE_BIN_DIR: controlplane/node/build.sh is not next to this package")
        if not build:
            raise NodeError("node binaries are not built; run controlplane/node/build.sh (make node)")
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            raise NodeError(f"controlplane/node/build.sh failed:\n{result.stderr[-4000:]}")
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in NODE_BINARIES if not (bin_dir / name).is_file()]
    if missing:
        raise NodeError(f"missing node binaries in {bin_dir}: {', '.join(missing)}")
    return bin_dir


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a node, as messages a user can act on (empty: nothing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("a node needs root (network setup, cgroups, mounts)")
    for tool, package in (("runc", "runc"), ("iptables", "iptables"), ("iptables-restore", "iptables")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH (apt-get install {package})")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append("br_netfilter is not loaded (modprobe br_netfilter)")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").is_file():
        problems.append("no cgroup hierarchy with the memory controller under /sys/fs/cgroup")
    return problems


def component_versions(bin_dir: Path) -> dict[str, str]:
    """Versions from the cache directory's name (node-k8s-v1.36.3-containerd-v2.4.2-...)."""
    name = bin_dir.parent.name
    versions = dict(re.findall(r"(k8s|containerd|cni|coredns|knp)-(v[0-9][^-]*)", name))
    return {key: versions.get(key, "local") for key in ("k8s", "containerd", "cni", "coredns", "knp")}


def image_specs(bin_dir: Path) -> dict[str, ImageSpec]:
    """The node's images, each one static binary from the node build."""
    versions = component_versions(bin_dir)
    return {
        "pause": ImageSpec(f"localhost/pause:{versions['k8s']}", {"/pause": bin_dir / "pause"}, ["/pause"]),
        "agnhost": ImageSpec(f"localhost/agnhost:{versions['k8s']}", {"/agnhost": bin_dir / "agnhost"}, ["/agnhost"]),
        "coredns": ImageSpec(
            f"localhost/coredns:{versions['coredns']}", {"/coredns": bin_dir / "coredns"}, ["/coredns"]
        ),
        "kube-network-policies": ImageSpec(
            f"localhost/kube-network-policies:{versions['knp']}",
            {"/bin/netpol": bin_dir / "kube-network-policies"},
            ["/bin/netpol"],
        ),
    }


def _run(args: list[str], check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name
    return path.read_text().strip() if path.exists() else None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value + "\n")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _delete_link(name: str) -> None:
    if _link_exists(name):
        _run(["ip", "link", "delete", name], check=False)


def _unmount_under(root: Path) -> int:
    """Detach every mount at or below root (deepest first); returns how many."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(set(points), key=len, reverse=True):
        libc.umount2(point.encode(), _MNT_DETACH)
    return len(set(points))


def render_cni_config(ipam_dir: Path) -> dict[str, Any]:
    """The pod network: a bridge with the node as gateway, host-local addresses, hostPort support."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def render_containerd_config(workdir: Path, bin_dir: Path, runc: str, sandbox_image: str, base_spec: Path) -> str:
    """containerd 2 (config version 3) with every path under workdir, runc with its state there too, NRI off
    (its socket is a fixed host path), and the CRI oom_score_adj kept at or above containerd's (lowering it needs
    CAP_SYS_RESOURCE)."""
    d = workdir / "containerd"
    return f"""version = 3
root = "{d / "root"}"
state = "{d / "state"}"
[grpc]
  address = "{d / "containerd.sock"}"
[plugins.'io.containerd.internal.v1.opt']
  path = "{d / "opt"}"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox_image}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "{base_spec}"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{d / "runc"}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{bin_dir / "cni"}"]
    conf_dir = "{workdir / "cni" / "net.d"}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def render_kubelet_config(
    workdir: Path, ca_cert: Path, containerd_socket: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # kubelet >= 1.35 refuses cgroup v1 unless told otherwise; no systemd here, hence cgroupfs.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # No host resolv.conf: pods get cluster DNS only, nothing outside this machine.
        "resolvConf": "",
        "podLogsDir": str(workdir / "pod-logs"),
        "failSwapOn": False,
        # Raising its own OOM protection needs CAP_SYS_RESOURCE, which this machine does not grant.
        "oomScoreAdj": 0,
        # A shared machine: evict only when it is nearly out of room; never collect the imported images (they
        # cannot be pulled again).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "kubeAPIQPS": 50,
        "kubeAPIBurst": 100,
    }


def render_kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": CLUSTER_CIDR,
        # NodePorts on the node's own address only, never on the machine's other interfaces.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "oomScoreAdj": 0,
        # Leave the host's conntrack settings alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


@dataclass
class Node:
    """A node registered with `control_plane`. Use as a context manager, or call start() and stop()."""

    control_plane: ControlPlane
    bin_dir: Path | None = None
    workdir: Path | None = None
    start_timeout: float = 180.0
    keep_workdir: bool = False
    images: dict[str, str] = field(init=False, default_factory=dict)
    timings: dict[str, float] = field(init=False, default_factory=dict)
    kubelet_port: int = field(init=False, default=0)
    _processes: list[_Process] = field(init=False, default_factory=list)
    _owns_workdir: bool = field(init=False, default=False)
    _lock: IO[str] | None = field(init=False, default=None)
    _sysctls: dict[str, str] = field(init=False, default_factory=dict)
    _network_up: bool = field(init=False, default=False)
    _cni_results_before: set[str] = field(init=False, default_factory=set)
    # How each component was started, and how to tell it is back (restart()).
    _commands: dict[str, tuple[list[str], dict[str, str] | None]] = field(init=False, default_factory=dict)
    _ready_checks: dict[str, Callable[[], bool]] = field(init=False, default_factory=dict)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def _dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    @property
    def containerd_socket(self) -> Path:
        return self._dir / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against this node's containerd, in the CRI namespace (k8s.io)."""
        assert self.bin_dir is not None
        return _run([str(self.bin_dir / "ctr"), "-a", str(self.containerd_socket), "-n", "k8s.io", *args],
                    check=check, timeout=timeout)  # fmt: skip

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl from the control plane's build, as the admin."""
        assert self.control_plane.bin_dir is not None
        command = [str(self.control_plane.bin_dir / "kubectl"), f"--kubeconfig={self.control_plane.kubeconfig}"]
        result = subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result

    def start(self) -> None:
        problems = missing_prerequisites()
        if problems:
            raise NodeError("this machine cannot run a node: " + "; ".join(problems))
        if self.control_plane.advertise_address != API_ADDRESS:
            raise NodeError(f"start the control plane with ControlPlane(advertise_address={API_ADDRESS!r})")
        began = time.monotonic()
        self.bin_dir = self.bin_dir or find_node_binaries()
        self._take_lock()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="access-hygiene-node-"))
            self._owns_workdir = True
        self._dir.mkdir(parents=True, exist_ok=True)
        try:
            self._setup_network()
            self._write_credentials()
            self._start_relay()
            self._start_containerd()
            self._import_images()
            self.timings["runtime"] = time.monotonic() - began
            self._start_scheduler()
            # kubelet first: kube-proxy waits (up to 30 s) for its Node object to exist.
            self._start_kubelet()
            self._start_kube_proxy()
            self.timings["node_ready"] = time.monotonic() - began
            self._start_addons()
            self.timings["addons_ready"] = time.monotonic() - began
        except BaseException:
            self.stop()
            raise

    # -- host setup -----------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock = LOCK_PATH.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise NodeError(f"a node already runs on this machine ({holder} holds {LOCK_PATH})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _setup_network(self) -> None:
        # Leftovers of a node that was killed (the lock says no node runs now).
        for link in (POD_BRIDGE, NODE_BRIDGE, API_VETH):
            _delete_link(link)
        _run(["ip", "netns", "delete", API_NETNS], check=False)
        for rule in (["-D", "POSTROUTING", "-j", DIVERT_CHAIN], ["-F", DIVERT_CHAIN], ["-X", DIVERT_CHAIN]):
            _run(["iptables", "-w", "-t", "mangle", *rule], check=False)
        self._sysctls = {name: value for name in KUBELET_SYSCTLS if (value := _read_sysctl(name)) is not None}
        self._cni_results_before = set(_listdir(CNI_RESULTS))
        self._network_up = True
        _run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE])
        _run(["ip", "link", "set", NODE_BRIDGE, "up"])
        # Host processes reach Services from the node's address; without kube-proxy's DNAT a packet to a Service
        # goes into this bridge, which has no ports, and never to the machine's real interfaces.
        _run(["ip", "route", "replace", SERVICE_CIDR, "dev", NODE_BRIDGE, "src", NODE_IP])
        # The API server's address, one veth away (its namespace routes everything back through the host).
        _run(["ip", "netns", "add", API_NETNS])
        _run(["ip", "link", "add", API_VETH, "type", "veth", "peer", "name", "eth0", "netns", API_NETNS])
        for command in (
            ["addr", "add", f"{API_ADDRESS}/32", "dev", "eth0"],
            ["link", "set", "lo", "up"],
            ["link", "set", "eth0", "up"],
            ["route", "add", f"{NODE_IP}/32", "dev", "eth0"],
            ["route", "add", "default", "via", NODE_IP, "dev", "eth0"],
        ):
            _run(["ip", "-n", API_NETNS, *command])
        _run(["ip", "link", "set", API_VETH, "up"])
        _run(["ip", "route", "replace", f"{API_ADDRESS}/32", "dev", API_VETH, "src", NODE_IP])
        _write_sysctl("net/ipv4/ip_forward", "1")
        _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")

    def _write_credentials(self) -> None:
        certs = self.control_plane.certs
        pki = self._dir / "pki"
        identities = {
            "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
        }
        for name, (user, groups) in identities.items():
            cert, key = issue_client_cert(pki, certs, name, user, groups)
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {"server": self.control_plane.server, "certificate-authority": str(certs.ca_cert)},
                    }
                ],
                "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
                "current-context": "local",
            }
            (self._dir / f"{name}.kubeconfig").write_text(json.dumps(config, indent=2))

    # -- processes ------------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> _Process:
        log_path = self._dir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=self._dir,
        )
        process = _Process(name, popen, log_path, log_file)
        self._processes.append(process)
        self._commands[name] = (args, env)
        return process

    def restart(self, name: str, down_seconds: float = 0.0) -> None:
        """Kill a component (SIGKILL: a crash, not a stop), keep it down for a while, start it again with the same
        command and wait until it serves (fault tests: containers outlive kubelet and containerd)."""
        process = next(p for p in self._processes if p.name == name)
        process.popen.kill()
        process.popen.wait(timeout=30)
        process.log_file.close()
        self._processes.remove(process)
        time.sleep(down_seconds)
        args, env = self._commands[name]
        restarted = self._spawn(name, args, env)
        self._wait(restarted, self._ready_checks.get(name, lambda: True), f"{name} after a restart")

    def _wait(self, process: _Process | None, ready: Callable[[], bool], what: str, timeout: float = 0) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            if process is not None and process.popen.poll() is not None:
                raise NodeError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
            if ready():
                return
            time.sleep(0.25)
        tail = process.tail() if process is not None else ""
        raise NodeError(f"timed out after {timeout or self.start_timeout}s waiting for {what}:\n{tail}")

    def logs(self, name: str, lines: int = 60) -> str:
        for process in self._processes:
            if process.name == name:
                return process.tail(lines)
        return ""

    def _start_relay(self) -> None:
        port = self.control_plane.api_port
        relay = [
            sys.executable,
            "-m",
            "access_hygiene.localcluster.relay",
            API_ADDRESS,
            str(port),
            "127.0.0.1",
            str(port),
        ]
        process = self._spawn(
            "apiserver-relay",
            [*relay, f"--listen-netns=/var/run/netns/{API_NETNS}"],
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        self._wait(process, lambda: _tcp_open(API_ADDRESS, port), f"the API server relay at {API_ADDRESS}")

    def _start_containerd(self) -> None:
        assert self.bin_dir is not None
        runc = shutil.which("runc")
        assert runc is not None
        cni_dir = self._dir / "cni" / "net.d"
        cni_dir.mkdir(parents=True, exist_ok=True)
        (cni_dir / "10-access-hygiene.conflist").write_text(
            json.dumps(render_cni_config(self._dir / "cni" / "ipam"), indent=2)
        )
        self.images = {key: spec.name for key, spec in image_specs(self.bin_dir).items()}
        base_spec = self._dir / "containerd" / "base-spec.json"
        base_spec.parent.mkdir(parents=True, exist_ok=True)
        spec = json.loads(_run([str(self.bin_dir / "ctr"), "oci", "spec"]).stdout)
        spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": CONTAINER_NOFILE, "soft": CONTAINER_NOFILE}]
        base_spec.write_text(json.dumps(spec, indent=2))
        config = self._dir / "containerd" / "config.toml"
        config.write_text(render_containerd_config(self._dir, self.bin_dir, runc, self.images["pause"], base_spec))
        # The shim is found on PATH.
        path = f"{self.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        process = self._spawn("containerd", [str(self.bin_dir / "containerd"), f"--config={config}"], {"PATH": path})
        self._ready_checks["containerd"] = lambda: (
            self.containerd_socket.exists() and self.ctr("version", check=False).returncode == 0
        )
        self._wait(process, self._ready_checks["containerd"], "containerd")

    def _import_images(self) -> None:
        assert self.bin_dir is not None
        archives = self.bin_dir.parent / "images"
        for spec in image_specs(self.bin_dir).values():
            archive = write_archive(spec, archives)
            self.ctr("images", "import", "--local", str(archive), timeout=180)
            # Pinned: kubelet's image garbage collection never removes it (it cannot be pulled again).
            self.ctr("images", "label", spec.name, "io.cri-containerd.pinned=pinned")

    def import_image(self, archive: Path) -> None:
        """Import an image archive (OCI layout or docker-archive, e.g. `podman save --format oci-archive`) into the
        node's containerd and pin it, so pods can run it with imagePullPolicy: Never."""
        before = set(self.ctr("images", "list", "--quiet").stdout.split())
        self.ctr("images", "import", "--local", str(archive), timeout=600)
        for name in set(self.ctr("images", "list", "--quiet").stdout.split()) - before:
            if not name.startswith("sha256:"):
                self.ctr("images", "label", name, "io.cri-containerd.pinned=pinned")

    def _start_scheduler(self) -> None:
        assert self.bin_dir is not None
        kubeconfig = self._dir / "kube-scheduler.kubeconfig"
        process = self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._wait(process, lambda: True, "kube-scheduler")

    def _start_kube_proxy(self) -> None:
        assert self.bin_dir is not None
        config = self._dir / "kube-proxy.json"
        healthz = free_port()
        config.write_text(
            json.dumps(render_kube_proxy_config(self._dir / "kube-proxy.kubeconfig", healthz, free_port()), indent=2)
        )
        process = self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])
        self._wait(process, lambda: _http_ok(f"http://127.0.0.1:{healthz}/livez"), "kube-proxy /livez")

    def _start_kubelet(self) -> None:
        assert self.bin_dir is not None
        self.kubelet_port, healthz = free_port(), free_port()
        config = self._dir / "kubelet.json"
        config.write_text(
            json.dumps(
                render_kubelet_config(
                    self._dir, self.control_plane.ca_cert, self.containerd_socket, self.kubelet_port, healthz
                ),
                indent=2,
            )
        )
        self._ready_checks["kubelet"] = lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz")
        root = self._dir / "kubelet"
        process = self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self._dir / 'kubelet.kubeconfig'}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )
        self._wait(process, self._node_ready, f"node {NODE_NAME} Ready")

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_addons(self) -> None:
        manifests = render_addons(self.images, free_port())
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
        kubelet = next(p for p in self._processes if p.name == "kubelet")
        self._wait(kubelet, self._addons_ready, "CoreDNS and kube-network-policies")
        self._divert_to_enforcer()

    def _divert_to_enforcer(self) -> None:
        """kube-network-policies v0.8.0 queues packets with the nftables `queue` expression, which this kernel lacks
        (CONFIG_NFT_QUEUE is not set: its rule sync fails with `netlink receive: no such file or directory`). Its
        packet verdicts do not depend on that rule: the same packets reach its queue through the xtables NFQUEUE
        target (nft_compat), in mangle POSTROUTING: after DNAT, before SNAT, like its own chain. Every pod's packets
        go there rather than only those of pods a policy selects; the enforcer accepts the others. Without
        --queue-bypass: while the enforcer is down, new pod connections are dropped (its fail-closed default)."""
        _run(["iptables", "-w", "-t", "mangle", "-N", DIVERT_CHAIN], check=False)
        _run(["iptables", "-w", "-t", "mangle", "-F", DIVERT_CHAIN])
        for rule in DIVERT_RULES:
            _run(["iptables", "-w", "-t", "mangle", "-A", DIVERT_CHAIN, *rule])
        _run(["iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", "-j", DIVERT_CHAIN])

    def _addons_ready(self) -> bool:
        coredns = self._get("/apis/apps/v1/namespaces/kube-system/deployments/coredns") or {}
        enforcer = self._get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-network-policies") or {}
        return bool(coredns.get("status", {}).get("readyReplicas")) and bool(
            enforcer.get("status", {}).get("numberReady")
        )

    def _get(self, path: str) -> dict[str, Any] | None:
        cp = self.control_plane
        context = ssl.create_default_context(cafile=str(cp.ca_cert))
        request = urllib.request.Request(cp.server + path, headers={"Authorization": f"Bearer {cp.admin_token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                value: dict[str, Any] = json.loads(response.read())
                return value
        except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
            return None

    def running_tasks(self) -> dict[str, int]:
        """containerd's running tasks in the CRI namespace: container id -> host PID."""
        tasks = {}
        for line in self.ctr("tasks", "list", check=False).stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "RUNNING":
                tasks[parts[0]] = int(parts[1])
        return tasks

    def container_ids(self, **labels: str) -> list[str]:
        """Containers (pod sandboxes included) whose CRI labels match, e.g. container_name="coredns"."""
        keys = {"namespace": "io.kubernetes.pod.namespace", "pod": "io.kubernetes.pod.name",
                "container_name": "io.kubernetes.container.name"}  # fmt: skip
        filters = ",".join(f'labels."{keys[key]}"=={value}' for key, value in labels.items())
        return self.ctr("containers", "list", "--quiet", *([filters] if filters else [])).stdout.split()

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        """The host PID of a running container's first process (its /proc/<pid>/root is the container's view)."""
        tasks = self.running_tasks()
        for container_id in self.container_ids(namespace=namespace, pod=pod, container_name=container):
            if container_id in tasks:
                return tasks[container_id]
        raise NodeError(f"no running container {container} in pod {namespace}/{pod}")

    # -- stop -----------------------------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """Stop the node and undo its host changes. Safe to call on a half-started node."""
        by_name = {p.name: p for p in self._processes}
        for name in ("kubelet", "kube-scheduler"):
            self._terminate(by_name.get(name), grace)
        if "containerd" in by_name and by_name["containerd"].popen.poll() is None:
            self._stop_containers()
        for name in ("kube-proxy", "containerd", "apiserver-relay"):
            self._terminate(by_name.get(name), grace)
        for process in self._processes:
            process.log_file.close()
        self._processes.clear()
        if self.workdir is not None:
            _unmount_under(self._dir)
            self._remove_container_log_links()
        if self._network_up:
            self._teardown_network()
        if self._owns_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _terminate(self, process: _Process | None, grace: float) -> None:
        if process is None or process.popen.poll() is not None:
            return
        process.popen.terminate()
        try:
            process.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=10)

    def _stop_containers(self) -> None:
        """kube-network-policies first, with SIGINT (its only signal that removes its nftables table), then
        every other task killed and deleted (their shims exit with them)."""
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            enforcers = self.container_ids(container_name="kube-network-policies")
            for container_id in enforcers:
                self.ctr("tasks", "kill", "--signal", "SIGINT", container_id, check=False)
            deadline = time.monotonic() + 10
            while set(enforcers) & set(self.running_tasks()) and time.monotonic() < deadline:
                time.sleep(0.25)
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            tasks = self.ctr("tasks", "list", "--quiet", check=False).stdout.split()
            for task in tasks:
                self.ctr("tasks", "kill", "--signal", "SIGKILL", "--all", task, check=False)
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False)
            containers = self.container_ids()
            if containers:
                self.ctr("containers", "delete", *containers, check=False)

    def _remove_container_log_links(self) -> None:
        # kubelet links every container's log from /var/log/containers (a fixed path) into podLogsDir.
        links = Path("/var/log/containers")
        if not links.is_dir():
            return
        prefix = str(self._dir.resolve())
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(prefix):
                    link.unlink()

    def _teardown_network(self) -> None:
        for link in (POD_BRIDGE, NODE_BRIDGE, API_VETH):
            _delete_link(link)
        _run(["ip", "netns", "delete", API_NETNS], check=False)
        if self.bin_dir is not None:
            _run([str(self.bin_dir / "kube-proxy"), "--cleanup"], check=False)
        for rule in (["-D", "POSTROUTING", "-j", DIVERT_CHAIN], ["-F", DIVERT_CHAIN], ["-X", DIVERT_CHAIN]):
            _run(["iptables", "-w", "-t", "mangle", *rule], check=False)
        # kubelet's own chains (KUBE-FIREWALL guards 127.0.0.0/8; the canaries detect flushed tables).
        for tool in ("iptables", "ip6tables"):
            for rule in (
                ["-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"],
                ["-t", "filter", "-D", "OUTPUT", "-j", "KUBE-FIREWALL"],
                ["-t", "filter", "-F", "KUBE-FIREWALL"],
                ["-t", "filter", "-X", "KUBE-FIREWALL"],
                ["-t", "filter", "-X", "KUBE-KUBELET-CANARY"],
                ["-t", "nat", "-X", "KUBE-KUBELET-CANARY"],
                ["-t", "mangle", "-X", "KUBE-KUBELET-CANARY"],
                ["-t", "mangle", "-X", "KUBE-IPTABLES-HINT"],
            ):
                _run([tool, "-w", *rule], check=False)
        # CNI results (containerd's cni-loopback and our network) of sandboxes killed rather than deleted.
        for name in set(_listdir(CNI_RESULTS)) - self._cni_results_before:
            if name.startswith(("cni-loopback-", f"{CNI_NETWORK}-")):
                (CNI_RESULTS / name).unlink(missing_ok=True)
        for name, value in self._sysctls.items():
            if _read_sysctl(name) != value:
                _write_sysctl(name, value)
        self._network_up = False


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
    return False


__all__ = [
    "API_ADDRESS",
    "CLUSTER_DOMAIN",
    "DNS_SERVICE_IP",
    "NODE_IP",
    "NODE_NAME",
    "Node",
    "NodeError",
    "find_node_binaries",
    "missing_prerequisites",
]
