"""What handlers share through kopf's memo: settings, the API client, metrics, the event-driven core."""

from dataclasses import dataclass
from typing import Any

import kopf

from access_hygiene.clock import SYSTEM_CLOCK, Clock
from access_hygiene.metrics import Metrics
from access_hygiene.settings import OperatorSettings


@dataclass
class Runtime:
    settings: OperatorSettings
    api: Any  # kubernetes.client.ApiClient; typed loosely so handlers never import the client
    metrics: Metrics
    controller: Any = None  # k8s.controller.Controller, set once the watch cache starts
    usage: Any = None  # k8s.usage_monitor.UsageMonitor, when the audit webhook is enabled
    gate: Any = None  # k8s.leader.WriteGate: open on the leader (always, without election)
    elector: Any = None  # k8s.leader.LeaderElector, when leader election is enabled
    access: Any = None  # k8s.access_grants.AccessController (just-in-time access)
    clock: Clock = SYSTEM_CLOCK  # the one source of "now" for everything the operator runs


def runtime_of(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime
