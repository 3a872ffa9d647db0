"""The usage counters as a leader sends them to its standbys (docs/ha.md, "Counters across a leader change").

A standby that follows the leader keeps an exact copy of the leader's counters: one snapshot when it subscribes,
then every batch the leader records, in the leader's order. This module is the pure part: the snapshot of a
`UsageCounters` and a batch of requests as JSON-ready values, and back.

Times travel as ages, not instants: the snapshot says "first seen N seconds before the snapshot", and the
follower places that on its own clock. A follower therefore never trusts the leader's clock (the same rule as the
Lease), and a window that had run for 6 days on the old leader has run for 6 days on the new one.
"""

import math
import sys
from typing import Any

from access_hygiene.engine.usage.auditlog import AuditRequest
from access_hygiene.engine.usage.counters import ObservedSubject, Seen, UsageCounters

SNAPSHOT, BATCH, HEARTBEAT = "snapshot", "batch", "heartbeat"


def _age(now: float, instant: float) -> float | None:
    return None if math.isinf(instant) else max(0.0, now - instant)


def _instant(now: float, age: Any, missing: float) -> float:
    return missing if age is None else now - float(age)


def _seen_to_wire(key: tuple[str, ...], seen: Seen) -> list[Any]:
    names = sorted(seen.name_set())
    return [*key, names, seen.overflow, seen.unnamed]


def _seen_from_wire(item: list[Any]) -> tuple[tuple[str, ...], Seen]:
    *key, names, overflow, unnamed = item
    if len(key) != 6:
        raise ValueError(f"a usage key has 6 parts, not {len(key)}")
    seen = Seen()
    names = [str(name) for name in names]
    seen.names = None if not names else names[0] if len(names) == 1 else set(names)
    seen.overflow, seen.unnamed = bool(overflow), bool(unnamed)
    return tuple(sys.intern(str(part)) for part in key), seen


def snapshot_to_wire(counters: UsageCounters, now: float) -> dict[str, Any]:
    """Everything the counters hold, times as ages at `now` (taken under the caller's lock)."""
    return {
        "kind": SNAPSHOT,
        "recorded": counters.recorded,
        "droppedSubjects": counters.dropped_subjects,
        "droppedKeys": counters.dropped_keys,
        "subjects": [
            {
                "user": username,
                "requests": observed.requests,
                "firstAge": _age(now, observed.first_seen),
                "lastAge": _age(now, observed.last_seen),
                "droppedKeys": observed.dropped_keys,
                "seen": [_seen_to_wire(key, seen) for key, seen in observed.seen.items()],
            }
            for username, observed in counters.subjects.items()
        ],
    }


def restore_snapshot(counters: UsageCounters, wire: dict[str, Any], now: float) -> None:
    """Replace what `counters` holds with the snapshot, placed on this replica's clock at `now`. Each subject's
    version moves past the one it had here, so a judgement cached under the old content is never reused."""
    subjects: dict[str, ObservedSubject] = {}
    for item in wire.get("subjects") or []:
        username = sys.intern(str(item["user"]))
        previous = counters.subjects.get(username)
        observed = ObservedSubject(
            requests=int(item.get("requests") or 0),
            first_seen=_instant(now, item.get("firstAge"), math.inf),
            last_seen=_instant(now, item.get("lastAge"), -math.inf),
            dropped_keys=int(item.get("droppedKeys") or 0),
            version=(previous.version if previous is not None else 0) + 1,
        )
        for seen_item in item.get("seen") or []:
            key, seen = _seen_from_wire(seen_item)
            observed.seen[key] = seen  # type: ignore[index]
        subjects[username] = observed
    counters.subjects = subjects
    counters.recorded = int(wire.get("recorded") or 0)
    counters.dropped_subjects = int(wire.get("droppedSubjects") or 0)
    counters.dropped_keys = int(wire.get("droppedKeys") or 0)


# One request as the counters read it: the fields of AuditRequest, in this order.
_REQUEST_FIELDS = (
    "username", "verb", "allowed", "timestamp", "api_group", "resource", "subresource", "namespace", "name", "path",
    "counted", "code",
)  # fmt: skip


def batch_to_wire(sequence: int, requests: list[AuditRequest]) -> dict[str, Any]:
    return {
        "kind": BATCH,
        "seq": sequence,
        "requests": [[getattr(request, name) for name in _REQUEST_FIELDS] for request in requests],
    }


def batch_from_wire(wire: dict[str, Any]) -> tuple[int, list[AuditRequest]]:
    requests = []
    for item in wire.get("requests") or []:
        if len(item) != len(_REQUEST_FIELDS):
            raise ValueError(f"a mirrored request has {len(_REQUEST_FIELDS)} fields, not {len(item)}")
        fields = dict(zip(_REQUEST_FIELDS, item, strict=True))
        requests.append(
            AuditRequest(
                username=str(fields["username"]),
                verb=str(fields["verb"]),
                allowed=bool(fields["allowed"]),
                timestamp=float(fields["timestamp"]),
                api_group=str(fields["api_group"]),
                resource=str(fields["resource"]),
                subresource=str(fields["subresource"]),
                namespace=str(fields["namespace"]),
                name=str(fields["name"]),
                path=str(fields["path"]),
                counted=bool(fields["counted"]),
                code=int(fields["code"]),
            )
        )
    return int(wire["seq"]), requests


def comparable(wire: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its times: what two receivers that were sent the same batches must agree on exactly
    (tests, and an operator comparing replicas)."""
    return {
        "recorded": wire.get("recorded"),
        "droppedSubjects": wire.get("droppedSubjects"),
        "droppedKeys": wire.get("droppedKeys"),
        "subjects": {
            item["user"]: {
                "requests": item.get("requests"),
                "droppedKeys": item.get("droppedKeys"),
                "seen": sorted(
                    (*(str(part) for part in seen[:6]), tuple(seen[6]), seen[7], seen[8])
                    for seen in item.get("seen") or []
                ),
            }
            for item in wire.get("subjects") or []
        },
    }
