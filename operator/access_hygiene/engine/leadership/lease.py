"""The Lease decisions of client-go's leaderelection, without I/O: the caller reads and writes the Lease.

A candidate never trusts another process's clock: a held Lease expires `lease_duration` after this process
*observed* its record change (client-go's observedTime), not after the renewTime written in it. The leader
renews every `retry_period` and stops writing once `renew_deadline` has passed since the start of its last
successful renewal (its fence); renew_deadline < lease_duration leaves the difference as a margin in which a
write already sent can land before anyone else may take the Lease.
"""

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

# client-go's defaults (and controller-runtime's, Kyverno's, cert-manager's).
LEASE_DURATION_SECONDS = 15.0
RENEW_DEADLINE_SECONDS = 10.0
RETRY_PERIOD_SECONDS = 2.0
# client-go's JitterFactor: retry_period * 1.2 must still fit in the renew deadline.
JITTER_FACTOR = 1.2


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = LEASE_DURATION_SECONDS
    renew_deadline: float = RENEW_DEADLINE_SECONDS
    retry_period: float = RETRY_PERIOD_SECONDS

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector refuses the same combinations.
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than retry_period x {JITTER_FACTOR}")
        if self.retry_period <= 0:
            raise ValueError("retry_period must be positive")


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a coordination.k8s.io/v1 Lease's spec that election reads and writes."""

    holder: str = ""
    lease_duration_seconds: int = int(LEASE_DURATION_SECONDS)
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Observation:
    """The Lease as last read, and when this process saw its record change (its own clock)."""

    record: LeaseRecord
    resource_version: str
    observed_at: datetime


def observe(previous: Observation | None, record: LeaseRecord, resource_version: str, now: datetime) -> Observation:
    """The new observation of a Lease just read: the observation time moves only when the record changed, so a
    holder that stopped renewing expires lease_duration after its last renewal was first seen here."""
    if previous is not None and previous.record == record:
        return replace(previous, resource_version=resource_version)
    return Observation(record, resource_version, now)


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    UPDATE = "update"  # take it (expired or released) or renew it (ours)
    WAIT = "wait"  # another holder's Lease is still valid


@dataclass(frozen=True)
class Decision:
    action: Action
    record: LeaseRecord | None = None  # what to write (CREATE, UPDATE)

    @property
    def acquires(self) -> bool:
        return self.action is not Action.WAIT


def expires_at(observation: Observation) -> datetime:
    """When the observed term runs out, as this process counts it."""
    return observation.observed_at + timedelta(seconds=observation.record.lease_duration_seconds)


def held_by_other(identity: str, observation: Observation, now: datetime) -> bool:
    """Another identity holds the Lease and, as this process has seen it, its term has not run out."""
    record = observation.record
    if not record.holder or record.holder == identity:
        return False
    return now < expires_at(observation)


def standby_wait(identity: str, observation: Observation | None, now: datetime, retry: float) -> float:
    """Seconds a standby waits before its next attempt: the retry period, or less when the holder's term runs out
    sooner (a dead leader is replaced lease_duration after its last renewal, not up to a retry period later)."""
    if observation is None or not held_by_other(identity, observation, now):
        return retry
    return min(retry, (expires_at(observation) - now).total_seconds())


def process_identity(host: str) -> str:
    """A holder identity unique to this process, as client-go's (host name + "_" + a UUID). host_pid is not: in a
    container the operator is PID 1 every time, so a container restarted after a kill -9 would find its dead
    predecessor's identity on the Lease and renew it at once, cold, instead of the warm standby taking over."""
    return f"{host}_{uuid.uuid4().hex[:12]}"


def decide(identity: str, observation: Observation | None, now: datetime, timing: LeaseTiming) -> Decision:
    """What to do with the Lease now (client-go's tryAcquireOrRenew): create it, take or renew it, or wait."""
    duration = int(timing.lease_duration)
    if observation is None:
        return Decision(Action.CREATE, LeaseRecord(identity, duration, now, now, 0))
    if held_by_other(identity, observation, now):
        return Decision(Action.WAIT)
    current = observation.record
    if current.holder == identity:  # a renewal keeps the term's start and the transition count
        return Decision(Action.UPDATE, replace(current, lease_duration_seconds=duration, renew_time=now))
    return Decision(Action.UPDATE, LeaseRecord(identity, duration, now, now, current.transitions + 1))


def released(record: LeaseRecord, now: datetime) -> LeaseRecord:
    """What a leader writes on shutdown (client-go's ReleaseOnCancel): no holder, so a candidate takes it at once."""
    return replace(record, holder="", lease_duration_seconds=1, acquire_time=now, renew_time=now)


def fence(renewal_started: datetime, timing: LeaseTiming) -> datetime:
    """Until when a leader may write after a renewal that started at `renewal_started` succeeded. Any other
    candidate observed that renewal no earlier than it started, so it cannot take the Lease before
    renewal_started + lease_duration: the fence is lease_duration - renew_deadline before that."""
    return renewal_started + timedelta(seconds=timing.renew_deadline)
