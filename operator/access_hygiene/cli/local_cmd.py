"""`access-hygiene local`: the whole product on a local default, no external cluster needed.

Starts a real control plane (etcd + kube-apiserver + kube-controller-manager) on loopback,
installs the CRD and the grant ceiling, applies example policies and runs the operator.

With --node, the in-cluster path instead: the control plane with a real node (localcluster/node.py), the operator
image built from the Dockerfile and imported into the node, the chart installed with helm, the operator in its Pod
(localcluster/node_cluster.py); examples applied once it is Ready (docs/node.md).
"""

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from access_hygiene.cli.run_cmd import add_operator_arguments, run_operator


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser("local", help="start a local control plane and run the operator against it")
    parser.add_argument("--examples", type=Path, action="append", default=[], help="manifest file or dir to apply")
    parser.add_argument("--workdir", type=Path, default=Path(".local-cluster"), help="state dir (recreated)")
    parser.add_argument("--port", type=int, default=0, help="kube-apiserver port (default: a free one)")
    parser.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop after N seconds (with --node: N seconds once running; default: until Ctrl-C)",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="the in-cluster path: a real node, the operator image built from the Dockerfile, the chart installed "
        "with helm, the operator in its Pod (needs root; docs/node.md)",
    )
    parser.add_argument("--print-env", action="store_true", help="print the export lines of a running local and exit")
    parser.add_argument(
        "--audit-log",
        action="store_true",
        help="write kube-apiserver's audit log (Metadata level) to WORKDIR/audit.log",
    )
    parser.add_argument(
        "--audit-webhook",
        action="store_true",
        help="continuous mode: kube-apiserver sends ServiceAccounts' audit events to the operator's audit webhook "
        "(status.unusedRules, access_hygiene_unused_grants); judged after --usage-min-window",
    )
    parser.add_argument(
        "--admission",
        action="store_true",
        help="prevention at admission: the operator installs its ValidatingAdmissionPolicies and "
        "MutatingAdmissionPolicy (deny in enforce namespaces, warn in audit ones; the same as "
        "ACCESS_HYGIENE_ADMISSION_ENABLED=true; docs/admission.md)",
    )
    parser.add_argument(
        "--usage-min-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --audit-webhook: observe a ServiceAccount this long before calling a grant unused (default 7 days)",
    )
    add_operator_arguments(parser)
    parser.set_defaults(func=run, mode="enforce", metrics_port=9808, liveness="http://127.0.0.1:8080/healthz")


def run(args: argparse.Namespace) -> int:
    from access_hygiene.cli.local_env import print_env, report_crd_paths
    from access_hygiene.k8s.bootstrap import apply_manifests, install_prerequisites, load_manifests
    from access_hygiene.k8s.client import make_api_client
    from access_hygiene.k8s.reports import install_report_crds
    from access_hygiene.localcluster import ControlPlane
    from access_hygiene.settings import OperatorSettings

    if args.print_env:
        return print_env(args.workdir)
    if args.node:
        return run_node(args)
    if args.admission:  # before the handlers are imported: they read it once
        os.environ["ACCESS_HYGIENE_ADMISSION_ENABLED"] = "true"
    shutil.rmtree(args.workdir, ignore_errors=True)
    # Until kopf takes over signal handling, SIGTERM unwinds like Ctrl-C so the control plane is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    # A hangup (the terminal closed, an SSH connection dropped) is a Ctrl-C: kopf handles SIGINT while it runs,
    # and before and after it SIGINT unwinds as KeyboardInterrupt. Either way the control plane is stopped in
    # order; if this process dies without stopping it (SIGKILL), the control plane's watchdog does.
    signal.signal(signal.SIGHUP, _hang_up)
    with ControlPlane(
        workdir=args.workdir.resolve(),
        keep_workdir=True,
        api_port=args.port,
        audit_log=args.audit_log,
        audit_webhook=args.audit_webhook,
    ) as control_plane:
        kubeconfig = str(control_plane.kubeconfig)
        print(f"Control plane ready at {control_plane.server}")
        print_env(args.workdir, control_plane.bin_dir)  # export KUBECONFIG=..., export PATH=... (kubectl)
        if args.audit_log:
            print(f"  audit log: {control_plane.audit_log_path}")
        if control_plane.webhook is not None:
            print(f"  audit webhook: {control_plane.webhook.url} (kubeconfig {control_plane.webhook.kubeconfig})")
            os.environ.update(control_plane.webhook.operator_env())
            if args.usage_min_window is not None:
                os.environ["ACCESS_HYGIENE_USAGE_MIN_WINDOW_SECONDS"] = str(args.usage_min_window)
        with make_api_client(kubeconfig) as api:
            install_prerequisites(api, OperatorSettings().grant_ceiling_cluster_role)
            install_report_crds(api, report_crd_paths())  # openreports.io Report, ClusterReport
            for line in apply_manifests(api, load_manifests(args.examples)):
                print(f"  applied {line}")
        print(f"Operator starting in {args.mode} mode; metrics on http://127.0.0.1:{args.metrics_port}/metrics")
        os.environ["KUBECONFIG"] = kubeconfig
        os.environ.setdefault("ACCESS_HYGIENE_OPERATOR_NAMESPACE", "access-hygiene")
        # No kopf stop flag: kopf waits for a threading flag in an executor thread, and that thread keeps the
        # process alive when a signal stopped the operator. --duration sends the same SIGINT as Ctrl-C instead.
        if args.duration:
            timer = threading.Timer(args.duration, os.kill, args=(os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
        try:
            return run_operator(args)
        except KeyboardInterrupt:
            return 0
        finally:
            # After a hangup the terminal is gone: writing to it fails (EIO), and must not stop the stop.
            with contextlib.suppress(OSError):
                print("Stopping the control plane.", flush=True)


NODE_UNSUPPORTED = ("audit_log", "audit_webhook", "admission", "usage_min_window")


def node_conflicts(args: argparse.Namespace) -> list[str]:
    """Options of the in-process operator that --node does not take (the chart's values configure the Pod)."""
    return [f"--{name.replace('_', '-')}" for name in NODE_UNSUPPORTED if getattr(args, name) not in (False, None)]


def node_ready_lines(pod: str, metrics_url: str, figures: dict[str, float]) -> list[str]:
    """What `local --node` prints once the operator Pod and the examples are Ready (after the export lines)."""
    timings = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in figures.items())
    return [
        f"Operator running in Pod {pod} (chart helm/access-hygiene, image pull policy Never): {timings}",
        "  Its /metrics is reached by the Pod IP (the node's pod bridge routes it from this machine):",
        f"  curl -s {metrics_url} | grep access_hygiene_",
        "  Operator logs: kubectl logs -n access-hygiene deploy/access-hygiene",
        "Running until Ctrl-C, a hangup or --duration; then helm uninstall, the node and the control plane stop.",
    ]


def run_node(args: argparse.Namespace) -> int:
    from access_hygiene.cli.local_env import print_env
    from access_hygiene.k8s.bootstrap import apply_manifests, load_manifests
    from access_hygiene.k8s.client import make_api_client
    from access_hygiene.localcluster import ControlPlane
    from access_hygiene.localcluster.controlplane import ControlPlaneError
    from access_hygiene.localcluster.image import ImageError, build_image, export_image, missing_tools
    from access_hygiene.localcluster.node import API_ADDRESS, Node, NodeError, missing_prerequisites
    from access_hygiene.localcluster.node_cluster import (
        RELEASE,
        ChartError,
        access_policies,
        helm,
        install_chart,
        metrics_url,
        wait_operator_ready,
        wait_policies_ready,
    )

    conflicts = node_conflicts(args)
    problems = missing_prerequisites() + [f"the operator image needs {tool}" for tool in missing_tools()]
    if conflicts or problems:
        for message in [f"{', '.join(conflicts)}: not with --node"] * bool(conflicts) + problems:
            print(f"error: {message}", file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hang_up)
    began = time.monotonic()
    figures: dict[str, float] = {}
    control_plane = ControlPlane(
        workdir=args.workdir.resolve(), keep_workdir=True, api_port=args.port, advertise_address=API_ADDRESS
    )
    try:
        with control_plane, Node(control_plane) as node:
            figures["control plane + node"] = time.monotonic() - began
            seconds = figures["control plane + node"]
            print(f"Control plane ready at {control_plane.server}; node Ready in {seconds:.1f}s", flush=True)
            assert control_plane.bin_dir is not None
            assert control_plane.kubeconfig is not None
            helm_bin = control_plane.bin_dir / "helm"
            started = time.monotonic()
            image = build_image()
            node.import_image(export_image(image))
            figures["image build + import"] = time.monotonic() - started
            print(f"Image {image.ref} imported into the node in {figures['image build + import']:.1f}s", flush=True)
            installed = False
            try:
                with make_api_client(str(control_plane.kubeconfig)) as api:
                    started = time.monotonic()
                    installed = True
                    install_chart(api, helm_bin, control_plane.kubeconfig, image.ref, control_plane.api_port)
                    pod = wait_operator_ready(api)
                    figures["helm install -> operator Pod Ready"] = time.monotonic() - started
                    manifests = load_manifests(args.examples)
                    started = time.monotonic()
                    for line in apply_manifests(api, manifests):
                        print(f"  applied {line}")
                    wait_policies_ready(api, access_policies(manifests))
                    figures["examples Ready"] = time.monotonic() - started
                print_env(args.workdir, control_plane.bin_dir)
                pod_name = f"{pod.metadata.namespace}/{pod.metadata.name}"
                print("\n".join(node_ready_lines(pod_name, metrics_url(pod), figures)), flush=True)
                _wait(args.duration)
            except KeyboardInterrupt:
                pass
            finally:
                with contextlib.suppress(OSError):
                    print("Stopping: helm uninstall, then the node, then the control plane.", flush=True)
                if installed:
                    try:
                        helm(helm_bin, control_plane.kubeconfig, "uninstall", RELEASE, "--wait", timeout=120)
                    except Exception as error:  # the node and the control plane stop regardless
                        with contextlib.suppress(OSError):
                            print(f"warning: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except (ControlPlaneError, NodeError, ImageError, ChartError) as error:  # stopped in order all the same
        print(f"error: {error}", file=sys.stderr)
        return 1
    with contextlib.suppress(OSError):
        print("Stopped.", flush=True)
    return 0


def _wait(duration: float) -> None:
    """Until `duration` seconds have passed (0: forever); Ctrl-C, SIGTERM and a hangup raise KeyboardInterrupt."""
    deadline = time.monotonic() + duration if duration else None
    while deadline is None or time.monotonic() < deadline:
        time.sleep(1 if deadline is None else min(1, max(0.0, deadline - time.monotonic())))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)
