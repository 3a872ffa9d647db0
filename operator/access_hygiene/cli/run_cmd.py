"""`access-hygiene run`: the operator (kopf), cluster-wide, standalone."""

import argparse
import contextlib
import os
from typing import Any


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser("run", help="run the operator against the current kubeconfig or in-cluster")
    add_operator_arguments(parser)
    parser.set_defaults(func=run)


def add_operator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["audit", "enforce"], help="default mode (env ACCESS_HYGIENE_MODE)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus metrics port (env ACCESS_HYGIENE_METRICS_PORT)")
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL; readiness is /readyz on the same port (empty: neither)",
    )
    parser.add_argument("--verbose", action="store_true")


def run_operator(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    import access_hygiene.handlers  # noqa: F401  (registers the handlers)
    from access_hygiene.handlers.health import health_server
    from access_hygiene.handlers.lifecycle import configure_kopf

    if args.mode:
        os.environ["ACCESS_HYGIENE_MODE"] = args.mode
    if args.metrics_port is not None:
        os.environ["ACCESS_HYGIENE_METRICS_PORT"] = str(args.metrics_port)
    kopf.configure(verbose=args.verbose)
    # Settings that kopf's own tasks read as they start (before any start-up handler has run).
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    memo = kopf.Memo()  # the start-up handlers put the runtime in it; readiness reads the controller from there

    async def operate() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if args.liveness:
                await stack.enter_async_context(health_server(args.liveness, memo))
            await kopf.operator(settings=settings, standalone=True, clusterwide=True, memo=memo)

    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run
        asyncio.run(operate())
    return 0


def run(args: argparse.Namespace) -> int:
    return run_operator(args)
