"""Kubernetes audit events (audit.k8s.io/v1, one JSON object per line) parsed into what usage analysis needs.

Pure: one line in, one `AuditRequest` (or a `LineError` saying why the line was not used) out. Reading
files, gzip and stdin is the CLI's job (cli/auditlog_input.py); aggregation is engine/usage/aggregation.py.

What is kept of an event (all present at the `Metadata` audit level):
- the identity that was authorized: `impersonatedUser` when set, else `user`;
- the request: verb, and either the objectRef (apiGroup, resource, subresource, namespace, name) or,
  for non-resource requests, the path of `requestURI`;
- the authorization decision: the `authorization.k8s.io/decision` annotation (`allow`/`forbid`) when
  present, else the response code (403 = forbidden). A request that was authorized but then failed
  (404, 409, 422, admission) still needed the permission, so it counts as allowed;
- `requestReceivedTimestamp`.

Stages: an event is logged per stage. `ResponseComplete` and `Panic` are the request; for long-running
requests (watch) `ResponseStarted` is logged when the watch begins, and counted then, so a watch still
open when the log was rotated is not lost. `RequestReceived` carries no decision and is ignored.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

AUDIT_API_VERSION = "audit.k8s.io/v1"
DECISION_ANNOTATION = "authorization.k8s.io/decision"
COUNTED_STAGES = frozenset({"ResponseComplete", "Panic"})
LONG_RUNNING_VERBS = frozenset({"watch"})

# Reasons a line is not used. "error" reasons make the result partial and are reported with line numbers;
# "skipped" reasons are normal (other stages, unauthenticated requests) and only counted.
ErrorReason = Literal["malformed-json", "not-an-event", "unsupported-api-version", "missing-field", "bad-timestamp"]
SkipReason = Literal["blank", "stage", "no-user"]


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """One authorized-or-denied API request as the audit log recorded it."""

    username: str
    verb: str
    allowed: bool
    timestamp: float  # unix seconds (requestReceivedTimestamp)
    api_group: str = ""
    resource: str = ""  # empty for non-resource requests
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests only: the URL path without query
    counted: bool = True  # False for the ResponseComplete of a watch already counted at ResponseStarted
    code: int = 0

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


@dataclass(frozen=True, slots=True)
class LineError:
    reason: ErrorReason | SkipReason
    detail: str = ""

    @property
    def is_error(self) -> bool:
        return self.reason not in ("blank", "stage", "no-user")


def parse_timestamp(text: str) -> float:
    """RFC 3339 (the API's MicroTime, e.g. 2026-11-25T18:35:42.123456Z) -> unix seconds; ValueError if not."""
    if not text:
        raise ValueError("empty timestamp")
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return stamp.timestamp()


def _event_requests(event: dict[str, Any]) -> list[AuditRequest] | LineError:
    api_version = event.get("apiVersion")
    kind = event.get("kind")
    if api_version is not None and api_version != AUDIT_API_VERSION:
        return LineError("unsupported-api-version", f"apiVersion {api_version!r} (only {AUDIT_API_VERSION} is read)")
    if kind == "EventList":  # the webhook backend's batch format
        items = event.get("items")
        if not isinstance(items, list):
            return LineError("not-an-event", "EventList without items")
        requests: list[AuditRequest] = []
        for item in items:
            parsed = parse_event({"apiVersion": api_version, **item} if isinstance(item, dict) else item)
            if isinstance(parsed, LineError):
                if parsed.is_error:
                    return parsed
                continue
            requests.append(parsed)
        return requests
    parsed = parse_event(event)
    if isinstance(parsed, LineError):
        return parsed
    return [parsed]


def parse_event(event: Any) -> AuditRequest | LineError:
    """One decoded audit Event (dict) -> AuditRequest, or why it is not used."""
    if not isinstance(event, dict):
        return LineError("not-an-event", f"a JSON {type(event).__name__}, not an object")
    api_version = event.get("apiVersion")
    if api_version is not None and api_version != AUDIT_API_VERSION:
        return LineError("unsupported-api-version", f"apiVersion {api_version!r} (only {AUDIT_API_VERSION} is read)")
    kind = event.get("kind")
    if kind is not None and kind != "Event":
        return LineError("not-an-event", f"kind {kind!r}")
    stage = event.get("stage")
    verb = event.get("verb")
    if not isinstance(stage, str) or not isinstance(verb, str) or not verb:
        return LineError("missing-field", "stage or verb missing")
    if stage not in COUNTED_STAGES and (stage != "ResponseStarted" or verb not in LONG_RUNNING_VERBS):
        return LineError("stage", stage)
    user = event.get("impersonatedUser") or event.get("user")
    username = user.get("username") if isinstance(user, dict) else None
    if not isinstance(username, str) or not username:
        return LineError("no-user", "no user name")
    try:
        timestamp = parse_timestamp(str(event.get("requestReceivedTimestamp") or event.get("stageTimestamp") or ""))
    except (ValueError, OverflowError, OSError) as error:
        return LineError("bad-timestamp", str(error))
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) else None
    code = code if isinstance(code, int) else 0
    annotations = event.get("annotations")
    decision = annotations.get(DECISION_ANNOTATION) if isinstance(annotations, dict) else None
    if decision in ("allow", "forbid"):
        allowed = decision == "allow"
    elif stage == "ResponseStarted":
        allowed = True  # a watch that started streaming was authorized
    else:
        allowed = code not in (0, 401, 403)
    # A watch is counted when it starts streaming; its ResponseComplete still proves use (the start may not
    # be in the log), and a denied watch never starts, so it is counted at completion.
    counted = stage != "ResponseComplete" or verb not in LONG_RUNNING_VERBS or not allowed
    ref = event.get("objectRef")
    if isinstance(ref, dict) and ref.get("resource"):
        return AuditRequest(
            username=username,
            verb=verb,
            allowed=allowed,
            timestamp=timestamp,
            api_group=str(ref.get("apiGroup") or ""),
            resource=str(ref["resource"]),
            subresource=str(ref.get("subresource") or ""),
            namespace=str(ref.get("namespace") or ""),
            name=str(ref.get("name") or ""),
            counted=counted,
            code=code,
        )
    uri = event.get("requestURI")
    if not isinstance(uri, str) or not uri:
        return LineError("missing-field", "neither objectRef.resource nor requestURI")
    return AuditRequest(
        username=username, verb=verb, allowed=allowed, timestamp=timestamp, path=uri.split("?", 1)[0],
        counted=counted, code=code,
    )  # fmt: skip


def parse_line(line: bytes | str) -> list[AuditRequest] | LineError:
    """One line of an audit log (JSON lines; an EventList line yields several requests)."""
    if not line.strip():
        return LineError("blank")
    try:
        event = json.loads(line)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError; nesting too deep
        return LineError("malformed-json", str(error)[:120] or type(error).__name__)
    if not isinstance(event, dict):
        return LineError("not-an-event", f"a JSON {type(event).__name__}, not an object")
    return _event_requests(event)
