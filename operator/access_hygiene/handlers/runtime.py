"""What handlers share through kopf's memo: settings, the API client, metrics."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kopf

from access_hygiene.metrics import Metrics
from access_hygiene.settings import OperatorSettings


@dataclass
class Runtime:
    settings: OperatorSettings
    api: Any  # kubernetes.client.ApiClient; typed loosely so handlers never import the client
    metrics: Metrics


def runtime_of(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


@contextmanager
def observed(runtime: Runtime, handler: str) -> Iterator[dict[str, str]]:
    """Times a handler and records its outcome (set outcome["value"] inside)."""
    outcome = {"value": "success"}
    started = time.monotonic()
    try:
        yield outcome
    except Exception:
        outcome["value"] = "error"
        raise
    finally:
        runtime.metrics.observe_reconcile(handler, outcome["value"], time.monotonic() - started)
