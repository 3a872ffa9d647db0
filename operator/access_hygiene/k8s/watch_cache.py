"""The watch-fed cluster state: one lean list+watch per kind, objects trimmed to what the rules read.

Why not kopf for bulk state: kopf spends ~1 ms per object on each event (20,000 RoleBindings took 19 s
and 219 MiB to deliver), while a paged LIST parsed as raw JSON takes 0.4 s. So each kind gets a
reflector thread: a paged LIST (sets the resourceVersion), then a WATCH from it with bookmarks, a
relist only on 410 Gone, and short jittered reconnects when the API server is away. kopf stays the
framework for lifecycle, login, liveness and the AccessPolicy finalizer.

The store hands out plain objects (read-only by convention) and notifies one listener per change;
nothing outside k8s/ knows that a watch exists.
"""

import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import kubernetes
import urllib3

from access_hygiene.engine.ground.snapshot import ClusterSnapshot, trim_object
from access_hygiene.k8s.errors import OUTAGE, is_connection_error, is_transient, retry_reason
from access_hygiene.k8s.resources import Obj, open_response, resource_type

logger = logging.getLogger(__name__)
# A private generator: jitter must not draw from (or disturb) the global random state.
_JITTER = random.Random()

PAGE_SIZE = 500
WATCH_TIMEOUT_SECONDS = 300  # the server ends each watch after about this long; we then resume from the last RV
RECONNECT_DELAY_RANGE = (0.2, 1.5)  # first retry after a failure; grows to MAX_RECONNECT_DELAY
# The wait is drawn from [delay, 2 x delay]: a watch is back within 4 s of the API server, not 10 (an outage's new
# events wait for it); refused connections cost the server nothing.
MAX_RECONNECT_DELAY = 2.0
ABSENT_KIND_POLL = 0.5  # how often a reflector waiting for its kind's CRD checks whether it was stopped
ABSENT_KIND_DELAY = 5.0  # an optional kind whose CRD is established but not served: looked for again after 5-10 s
CRD_API_VERSION, CRD_KIND = "apiextensions.k8s.io/v1", "CustomResourceDefinition"


@dataclass(frozen=True)
class WatchSpec:
    api_version: str
    kind: str
    label_selector: str = ""
    field_selector: str = ""  # e.g. metadata.name=<name>: one named object (a CRD) rather than every one
    metadata_only: bool = False  # Secrets: names, labels and annotations are enough; data is never fetched
    optional: bool = False  # a kind the cluster may not serve (e.g. the CRD is not installed yet)


@dataclass(frozen=True)
class Change:
    """One object changed: old is None when it appeared, new is None when it went away."""

    kind: str
    old: Obj | None
    new: Obj | None

    @property
    def namespace(self) -> str:
        obj = self.new if self.new is not None else self.old
        return str(((obj or {}).get("metadata") or {}).get("namespace") or "")


Listener = Callable[[list[Change]], None]


class GoneError(Exception):
    """The watch's resourceVersion is too old (HTTP 410): relist."""


_SHARED_UP_TO = 64  # characters: names, kinds, label keys and values, verbs; not long annotation values
# How many distinct containers a reflector remembers before it starts over: its memory is bounded by that, not by
# everything it ever saw (objects already stored keep what they share).
SHARED_CONTAINERS_LIMIT = 50_000
# Metadata values each object has its own of: interning them would share nothing and cost the process's table of
# interned strings a slot each (110,000 of them at full scale, a 7 MiB table).
_UNIQUE = frozenset({"uid", "resourceVersion"})


class SharedValues:
    """One shared copy per distinct content of the parts objects repeat: short strings (namespace names, kinds,
    roleRef and subject fields, label keys, verbs: the JSON decoder makes a new string per occurrence) and the dicts
    and lists made of them (a roleRef, a Role's rules, a Pod's tolerations and token volume, the operator's own
    NetworkPolicy specs and labels). Halves the memory of a large cluster's state (benchmarks/memory_benchmark.py).
    Safe because the store's objects are read-only (its contract) and a shared container equals, item for item and
    type for type, each one it stands for. An object's top-level dict and metadata stay its own (uid, version).

    A container is known by its items, those that are containers by identity (each is a known one already: the walk
    is bottom-up): by the hash of those, then compared item for item (most containers are seen once, and a hash
    costs less to keep than the items). All forgotten at once past `limit`. One per reflector (one thread)."""

    def __init__(self, limit: int = SHARED_CONTAINERS_LIMIT) -> None:
        self.limit = limit
        self._dicts: dict[int, dict[str, Any]] = {}
        self._lists: dict[int, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._dicts) + len(self._lists)

    def object(self, obj: Obj) -> Obj:
        """The object with its parts shared (a new top-level dict and metadata, its own)."""
        return {
            sys.intern(key): self._own(item) if key == "metadata" else self.value(item) for key, item in obj.items()
        }

    def _own(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return self.value(value)
        return {sys.intern(key): item if key in _UNIQUE else self.value(item) for key, item in value.items()}

    def value(self, value: Any) -> Any:
        """The value with its short strings and its containers shared."""
        if isinstance(value, str):
            return sys.intern(value) if len(value) <= _SHARED_UP_TO else value
        if isinstance(value, dict):
            items = {sys.intern(key): self.value(item) for key, item in value.items()}
            return self._known(self._dicts, _dict_items(items), items)
        if isinstance(value, list):
            entries = [self.value(item) for item in value]
            return self._known(self._lists, _list_items(entries), entries)
        return value

    def _known(self, known: dict[int, Any], items: tuple[Any, ...], fresh: Any) -> Any:
        digest = hash(items)
        found = known.get(digest)
        if found is not None:
            same = _dict_items(found) if isinstance(found, dict) else _list_items(found)
            return found if same == items else fresh  # (another content with the same hash: rare, not shared)
        if len(self._dicts) + len(self._lists) >= self.limit:
            self._dicts.clear()
            self._lists.clear()
        known[digest] = fresh
        return fresh


def _dict_items(value: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(chain.from_iterable((name, _token(item)) for name, item in value.items()))


def _list_items(value: list[Any]) -> tuple[Any, ...]:
    return tuple(map(_token, value))


def _token(value: Any) -> Any:
    """What stands for an item in its container's key: a string itself; a (shared) container its identity, an int
    no string equals; any other scalar a (type, value) pair, since 1 == 1.0 == True but their JSON differs."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return id(value)
    return (type(value), value)


class ClusterState:
    """Objects by kind, namespace and name. Thread-safe; each change is passed to the listener once."""

    def __init__(self, specs: Iterable[WatchSpec], counted_label: tuple[str, str] | None = None) -> None:
        """counted_label: a label (key, value) whose objects are counted per kind as they come and go."""
        self.specs = tuple(specs)
        self._counted_label = counted_label
        self._labelled: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {spec.kind: {} for spec in self.specs}
        self._synced: dict[str, threading.Event] = {spec.kind: threading.Event() for spec in self.specs}
        self._listener: Listener | None = None
        self.relists = 0
        self.unchanged_updates = 0  # updates dropped because nothing the rules read changed

    # Reading (the ObjectSource protocol of engine/audit/incremental.py) -------------------------------

    def objects(self, kind: str) -> list[Obj]:
        with self._lock:
            return [obj for bucket in self._objects.get(kind, {}).values() for obj in bucket.values()]

    def in_namespace(self, kind: str, namespace: str) -> list[Obj]:
        with self._lock:
            return list(self._objects.get(kind, {}).get(namespace, {}).values())

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get(kind, {}).get(namespace, {}).get(name)

    def count_labelled(self, kind: str) -> int:
        """How many objects of the kind carry the counted label (kept as they change, not counted per call)."""
        return self._labelled[kind]

    def _has_label(self, obj: Obj | None) -> int:
        if obj is None or self._counted_label is None:
            return 0
        key, value = self._counted_label
        labels = (obj.get("metadata") or {}).get("labels")
        return int(isinstance(labels, dict) and labels.get(key) == value)

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(len(bucket) for bucket in self._objects.get(kind, {}).values())

    def snapshot(self) -> ClusterSnapshot:
        """Every object as a plain ClusterSnapshot (lists of the stored dicts, not copies)."""
        snapshot = ClusterSnapshot()
        with self._lock:
            for kind in self._objects:
                for bucket in self._objects[kind].values():
                    for obj in bucket.values():
                        snapshot.add(obj)
        return snapshot

    # Sync state ----------------------------------------------------------------------------------

    def is_synced(self, kind: str | None = None) -> bool:
        kinds = [kind] if kind else list(self._synced)
        return all(self._synced[k].is_set() for k in kinds)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in self._synced.values())

    def set_listener(self, listener: Listener | None) -> None:
        self._listener = listener

    # Writing (reflectors only) -------------------------------------------------------------------

    def _notify(self, changes: list[Change]) -> None:
        if changes and self._listener is not None:
            self._listener(changes)

    def replace(self, kind: str, items: list[Obj]) -> None:
        """A fresh LIST: store it whole and report what differs from what was stored."""
        fresh: dict[str, dict[str, Obj]] = {}
        for obj in items:
            metadata = obj.get("metadata") or {}
            fresh.setdefault(str(metadata.get("namespace") or ""), {})[str(metadata.get("name"))] = obj
        changes: list[Change] = []
        with self._lock:
            old = self._objects.get(kind, {})
            for namespace, bucket in fresh.items():
                old_bucket = old.get(namespace, {})
                for name, obj in bucket.items():
                    previous = old_bucket.get(name)
                    if previous is None:
                        changes.append(Change(kind, None, obj))
                    elif same_for_rules(previous, obj):
                        bucket[name] = previous  # keep the stored copy: nothing the rules read differs
                        self.unchanged_updates += 1
                    else:
                        changes.append(Change(kind, previous, obj))
            for namespace, old_bucket in old.items():
                bucket = fresh.get(namespace, {})
                changes.extend(Change(kind, obj, None) for name, obj in old_bucket.items() if name not in bucket)
            self._objects[kind] = fresh
            self._labelled[kind] = sum(self._has_label(obj) for bucket in fresh.values() for obj in bucket.values())
            self._synced[kind].set()
        self._notify(changes)

    def upsert(self, kind: str, obj: Obj) -> None:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name"))
        with self._lock:
            bucket = self._objects.setdefault(kind, {}).setdefault(namespace, {})
            previous = bucket.get(name)
            if previous is not None and same_for_rules(previous, obj):
                # A status-only update (a Deployment's conditions, a Pod's probes): dropped here, before it
                # marks any dependency or re-audits anything. The stored copy stays (same content).
                self.unchanged_updates += 1
                return
            bucket[name] = obj
            self._labelled[kind] += self._has_label(obj) - self._has_label(previous)
        self._notify([Change(kind, previous, obj)])

    def remove(self, kind: str, obj: Obj) -> None:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name"))
        with self._lock:
            bucket = self._objects.setdefault(kind, {}).get(namespace, {})
            previous = bucket.pop(name, None)
            self._labelled[kind] -= self._has_label(previous)
            if not bucket:
                self._objects[kind].pop(namespace, None)
        if previous is not None:
            self._notify([Change(kind, previous, None)])


def _version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def crd_established(crd: Obj) -> bool:
    """The API server serves the CRD's kind (its Established condition is True) and it is not being deleted."""
    if (crd.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def same_for_rules(old: Obj, new: Obj) -> bool:
    """Do two cached (trimmed) versions of one object hold the same content? The cache keeps only what the rules
    read (engine/ground/snapshot.py's trim_object drops workload status, a Pod's status but its phase,
    managedFields), so a status-only update arrives here equal to the stored copy but for its resourceVersion,
    which every write bumps and no rule reads."""
    if old is new or (_version(old) and _version(old) == _version(new)):
        return True
    if old.keys() != new.keys():
        return False
    old_metadata, new_metadata = old.get("metadata") or {}, new.get("metadata") or {}
    if old_metadata.keys() != new_metadata.keys():
        return False
    if any(old_metadata[key] != value for key, value in new_metadata.items() if key != "resourceVersion"):
        return False
    return all(old[key] == value for key, value in new.items() if key != "metadata")


class Reflector:
    """LIST then WATCH one kind into a ClusterState, in a daemon thread, until stopped."""

    def __init__(self, api: kubernetes.client.ApiClient, spec: WatchSpec, state: ClusterState) -> None:
        self.api = api
        self.spec = spec
        self.state = state
        self.rtype = resource_type(spec.api_version, spec.kind)
        self._stop = threading.Event()
        self._relist_requested = False
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{spec.kind}", daemon=True)
        self._shared = SharedValues()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:  # unblock a read waiting on the socket
            try:
                response.shutdown()
            except Exception:
                logger.debug("Watch stream already closed.")

    def request_relist(self) -> None:
        """End the current watch and LIST again (the long safety-net timer)."""
        self._relist_requested = True
        self._close_stream()

    def _close_stream(self) -> None:
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:
                logger.debug("Watch stream already closed.")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _accept(self, watch: bool = False) -> str:
        if self.spec.metadata_only:
            # A watch streams single objects: its metadata-only form is PartialObjectMetadata, not the List form
            # (with which new Secrets never reached the cache after the first LIST).
            form = "PartialObjectMetadata" if watch else "PartialObjectMetadataList"
            return f"application/json;as={form};g=meta.k8s.io;v=v1,application/json"
        return "application/json"

    def _query(self, **extra: str) -> dict[str, str]:
        query = dict(extra)
        if self.spec.label_selector:
            query["labelSelector"] = self.spec.label_selector
        if self.spec.field_selector:
            query["fieldSelector"] = self.spec.field_selector
        return query

    def _prepare(self, obj: Obj) -> Obj:
        obj["apiVersion"] = self.spec.api_version
        obj["kind"] = self.spec.kind
        return self._shared.object(trim_object(obj))

    def _run(self) -> None:
        resource_version = ""
        delay = RECONNECT_DELAY_RANGE[0]
        while not self._stop.is_set():
            try:
                if self._relist_requested:
                    self._relist_requested = False
                    resource_version = ""
                if not resource_version:
                    resource_version = self._relist()
                resource_version = self._watch(resource_version)
                delay = RECONNECT_DELAY_RANGE[0]
                OUTAGE.succeeded()
            except GoneError:
                resource_version = ""
            except Exception as error:
                if self._stop.is_set():
                    return
                if is_connection_error(error):
                    OUTAGE.failed(error)
                elif is_transient(error) and OUTAGE.in_outage:  # a restarting API server: part of the outage
                    OUTAGE.retried(retry_reason(error))
                elif isinstance(error, kubernetes.client.ApiException) and error.status == 404 and self.spec.optional:
                    self.state.replace(self.spec.kind, [])  # not served (yet): empty and synced
                    # LIST again once its CRD is established, not every few seconds; when it already was (a CRD
                    # without our version), in 5-10 s as before.
                    appeared = self._await_definition()
                    delay = RECONNECT_DELAY_RANGE[0] if appeared else ABSENT_KIND_DELAY
                else:
                    logger.warning(f"Watch of {self.spec.kind} failed: {type(error).__name__}: {error}; retrying.")
                self._stop.wait(_JITTER.uniform(delay, delay * 2))
                delay = min(delay * 2, MAX_RECONNECT_DELAY)

    def _await_definition(self) -> bool:
        """Block until the kind's CustomResourceDefinition is established (or the reflector stops), from a watch on
        that one object: an absent CRD costs one idle watch, not a LIST of the kind every few seconds. Whether it
        had to wait for it (False: established already, or stopped)."""
        group = self.spec.api_version.partition("/")[0]
        name = f"{self.rtype.plural}.{group}"
        definitions = ClusterState([WatchSpec(CRD_API_VERSION, CRD_KIND, field_selector=f"metadata.name={name}")])
        served = threading.Event()

        def changed(_: list[Change]) -> None:
            if any(crd_established(crd) for crd in definitions.objects(CRD_KIND)):
                served.set()

        definitions.set_listener(changed)
        watch = Reflector(self.api, definitions.specs[0], definitions)
        watch.start()
        try:
            while not definitions.is_synced() and not self._stop.is_set():
                definitions.wait_synced(ABSENT_KIND_POLL)
            if any(crd_established(crd) for crd in definitions.objects(CRD_KIND)):
                return False  # (read here: the listener may not have run yet)
            while not served.wait(ABSENT_KIND_POLL) and not self._stop.is_set():
                pass
        finally:
            watch.stop()
        if served.is_set():
            logger.info(f"{self.spec.kind} is served (its CustomResourceDefinition {name} is established).")
        return served.is_set()

    def _request(self, query: dict[str, str], *, timeout: tuple[float, float]) -> Any:
        accept = self._accept(watch=query.get("watch") == "true")
        return open_response(self.api, "GET", self.rtype.path(), query=query, accept=accept, timeout=timeout)

    def _relist(self) -> str:
        items: list[Obj] = []
        token = ""
        resource_version = ""
        while True:
            query = self._query(limit=str(PAGE_SIZE))
            if token:
                query["continue"] = token
            raw = self._request(query, timeout=(5.0, 60.0))
            page = json.loads(raw.data)
            items.extend(self._prepare(item) for item in page.get("items") or [])
            list_meta = page.get("metadata") or {}
            resource_version = str(list_meta.get("resourceVersion") or resource_version)
            token = str(list_meta.get("continue") or "")
            if not token:
                break
        self.state.relists += 1
        self.state.replace(self.spec.kind, items)
        OUTAGE.succeeded()
        return resource_version

    def _watch(self, resource_version: str) -> str:
        timeout_seconds = WATCH_TIMEOUT_SECONDS + _JITTER.randint(0, 60)  # spread reconnects
        query = self._query(
            watch="true",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        response = self._request(query, timeout=(5.0, timeout_seconds + 30.0))
        OUTAGE.succeeded()  # the watch is open: the API server answers
        self._response = response
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError()
                    raise kubernetes.client.ApiException(status=obj.get("code"), reason=obj.get("message"))
                resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.state.remove(self.spec.kind, self._prepare(obj))
                else:
                    self.state.upsert(self.spec.kind, self._prepare(obj))
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, OSError):
            if not (self._stop.is_set() or self._relist_requested):
                raise
        finally:
            self._response = None
            response.release_conn()
        return resource_version


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while True:
            index = buffer.find(b"\n")
            if index < 0:
                break
            line, buffer = buffer[:index], buffer[index + 1 :]
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


class WatchCache:
    """All reflectors of one ClusterState: start, wait for the first LISTs, stop."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        specs: Iterable[WatchSpec],
        counted_label: tuple[str, str] | None = None,
    ) -> None:
        self.api = api
        self.state = ClusterState(specs, counted_label)
        self.reflectors = [Reflector(api, spec, self.state) for spec in self.state.specs]

    def start(self) -> None:
        for reflector in self.reflectors:
            reflector.start()

    def relist(self) -> None:
        for reflector in self.reflectors:
            reflector.request_relist()

    def stop(self, timeout: float = 1.0) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        deadline = time.monotonic() + timeout
        for reflector in self.reflectors:
            reflector.join(max(0.0, deadline - time.monotonic()))


def make_watch_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """A client whose connection pool holds one long-lived connection per watched kind."""
    from access_hygiene.k8s.client import make_api_client, with_pool_size

    return with_pool_size(make_api_client(kubeconfig), 32)
