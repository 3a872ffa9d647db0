"""Effective permissions: RBAC bindings joined with their Roles/ClusterRoles, as the RBAC authorizer sees them.

Semantics follow kube-apiserver's RBAC authorizer (plugin/pkg/auth/authorizer/rbac) and the
clusterrole-aggregation controller:

- ClusterRoleBindings grant their ClusterRole everywhere (namespaced and cluster-scoped requests);
  RoleBindings grant their Role or ClusterRole only for requests in the binding's namespace.
- User subjects match the user name, Group subjects one of the user's groups, ServiceAccount
  subjects the name `system:serviceaccount:<ns>:<name>` (namespace defaults to the RoleBinding's).
- A service account is in `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
  `system:authenticated`; members of `system:masters` are allowed everything (the apiserver's
  privileged-group authorizer runs before RBAC).
- Rules match with `*` wildcards in verbs/apiGroups/resources, `*/<subresource>`, and resourceNames.
- Aggregated ClusterRoles get the union of the rules of the ClusterRoles their selectors match
  (to a fixpoint, as the controller converges), whatever their stored rules say.
- Bindings to missing roles grant nothing. The default ClusterRoles kube-apiserver recreates on every start
  (cluster-admin, admin, edit, view, system:*) come from shipped data when the snapshot lacks them
  (engine/rbac/bootstrap_roles.py), so a manifest scan resolves a binding to `edit` as a live scan does.
"""

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.selectors import selector_matches
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, labels_of, name_of, namespace_of
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles, with_bootstrap_roles
from access_hygiene.models.findings import ObjectRef, Subject

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
SA_USER_PREFIX = "system:serviceaccount:"
MASTERS_GROUP = "system:masters"
AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
BOOTSTRAP_LABEL = ("kubernetes.io/bootstrapping", "rbac-defaults")
AUTOUPDATE_ANNOTATION = "rbac.authorization.kubernetes.io/autoupdate"
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")

SubjectKey = tuple[str, str, str]  # (kind, namespace, name)


_NO_STRINGS: frozenset[str] = frozenset()


def _strings(value: Any) -> frozenset[str]:
    """A PolicyRule field as a set of strings (absent, empty or not a list: the empty set)."""
    return frozenset(map(str, value)) if value and isinstance(value, list) else _NO_STRINGS


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One RBAC PolicyRule, normalised to sets."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "PolicyRule":
        get = raw.get
        return cls(
            _strings(get("verbs")),
            _strings(get("apiGroups")),
            _strings(get("resources")),
            _strings(get("resourceNames")),
            _strings(get("nonResourceURLs")),
        )

    def allows(self, verb: str, api_group: str, resource: str, subresource: str = "", name: str = "") -> bool:
        """RuleAllows for a resource request (rbac/v1 helpers: VerbMatches, APIGroupMatches, ...)."""
        return self.allows_any_name(verb, api_group, resource, subresource) and (
            not self.resource_names or name in self.resource_names
        )

    def allows_any_name(self, verb: str, api_group: str, resource: str, subresource: str = "") -> bool:
        """Like allows() but ignoring resourceNames: does the rule grant this on at least one object?"""
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and api_group not in self.api_groups:
            return False
        if "*" in self.resources:
            return True
        combined = f"{resource}/{subresource}" if subresource else resource
        return combined in self.resources or (bool(subresource) and f"*/{subresource}" in self.resources)

    def allows_url(self, verb: str, path: str) -> bool:
        """NonResourceURLMatches: exact path or a `prefix*` pattern."""
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        return any(url == path or (url.endswith("*") and path.startswith(url[:-1])) for url in self.non_resource_urls)

    @property
    def is_superuser(self) -> bool:
        return {"*"} <= self.verbs and {"*"} <= self.api_groups and {"*"} <= self.resources and not self.resource_names

    def describe(self) -> str:
        def joined(values: frozenset[str]) -> str:
            return ",".join(v or '""' for v in sorted(values)) or "-"

        if self.non_resource_urls and not self.resources:
            return f"verbs={joined(self.verbs)} nonResourceURLs={joined(self.non_resource_urls)}"
        text = f"verbs={joined(self.verbs)} apiGroups={joined(self.api_groups)} resources={joined(self.resources)}"
        if self.resource_names:
            text += f" resourceNames={joined(self.resource_names)}"
        return text


class RuleSet(tuple[PolicyRule, ...]):
    """A role's resolved rules. Bindings of the same role share one RuleSet, which remembers what
    rules_grant() answered for it, so each role's capabilities are computed once per audit: for the
    registered patterns (register_pattern) as two bit masks computed in one go, for others one by one."""

    memo: dict[tuple[int, bool], tuple[object, bool]]
    # (patterns registered when computed, mask with resourceNames-restricted rules, mask without), or None.
    masks: tuple[int, int, int] | None

    def __new__(cls, rules: Iterable[PolicyRule] = ()) -> "RuleSet":
        instance = super().__new__(cls, rules)
        instance.memo = {}
        instance.masks = None
        return instance

    @property
    def grants_everything(self) -> bool:
        """`*` verbs on `*` resources in `*` groups (cluster-admin or equivalent) in one of the rules."""
        cached = self.memo.get((0, True))
        if cached is None:
            cached = self.memo[(0, True)] = (None, any(rule.is_superuser for rule in self))
        return cached[1]


@dataclass(frozen=True)
class Grant:
    """One expanded permission: a subject may `verb` `resource` in `api_group` in `namespace` ("" = cluster-wide)."""

    subject: Subject
    namespace: str
    api_group: str
    resource: str
    verb: str
    resource_names: frozenset[str]
    via_binding: ObjectRef
    via_role: ObjectRef
    non_resource_url: str = ""  # set (and api_group/resource empty) for nonResourceURLs grants


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity as the authorizer sees it: a user name and groups."""

    name: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, subject: Subject) -> "UserInfo":
        """The identity a subject authenticates as (groups the authenticators add included)."""
        if subject.kind == "ServiceAccount":
            groups = {"system:serviceaccounts", f"system:serviceaccounts:{subject.namespace}", AUTHENTICATED_GROUP}
            return cls(f"{SA_USER_PREFIX}{subject.namespace}:{subject.name}", frozenset(groups))
        if subject.kind == "Group":
            return cls("", frozenset({subject.name}))
        if subject.name == ANONYMOUS_USER:
            return cls(subject.name, frozenset({UNAUTHENTICATED_GROUP}))
        return cls(subject.name, frozenset({AUTHENTICATED_GROUP}))

    def subject_keys(self) -> list[SubjectKey]:
        keys: list[SubjectKey] = [("Group", "", group) for group in sorted(self.groups)]
        if self.name:
            keys.append(("User", "", self.name))
            if self.name.startswith(SA_USER_PREFIX):
                namespace, _, sa_name = self.name[len(SA_USER_PREFIX) :].partition(":")
                if namespace and sa_name:
                    keys.append(("ServiceAccount", namespace, sa_name))
        return keys


@dataclass(frozen=True, slots=True)
class Binding:
    """A RoleBinding or ClusterRoleBinding with its subjects and the (resolved) rules of its role."""

    ref: ObjectRef
    role_ref: ObjectRef
    namespace: str  # "" for ClusterRoleBindings
    subjects: tuple[Subject, ...]
    rules: tuple[PolicyRule, ...]
    role_found: bool
    bootstrap: bool  # a default binding kube-apiserver reconciles on every start

    def allows(self, verb: str, api_group: str, resource: str, subresource: str, namespace: str, name: str) -> bool:
        if self.namespace and self.namespace != namespace:
            return False
        return any(rule.allows(verb, api_group, resource, subresource, name) for rule in self.rules)


def service_account_keys(namespace: str, name: str) -> list[SubjectKey]:
    """The subject keys a ServiceAccount's bindings are indexed under: UserInfo.of(the ServiceAccount)
    .subject_keys(), without building either (called per ServiceAccount)."""
    user = f"{SA_USER_PREFIX}{namespace}:{name}"
    groups = sorted({"system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED_GROUP})
    keys: list[SubjectKey] = [("Group", "", group) for group in groups]
    keys.append(("User", "", user))
    sa_namespace, _, sa_name = user[len(SA_USER_PREFIX) :].partition(":")
    if sa_namespace and sa_name:
        keys.append(("ServiceAccount", sa_namespace, sa_name))
    return keys


def subject_username(subject: Subject) -> str:
    """The name excluded-prefix settings compare against (`system:serviceaccount:ns:name` for SAs)."""
    if subject.kind == "ServiceAccount":
        return f"{SA_USER_PREFIX}{subject.namespace}:{subject.name}"
    return subject.name


def parse_subject(text: str) -> Subject:
    """`system:serviceaccount:NS:NAME`, `ServiceAccount:NS/NAME`, `User:NAME`, `Group:NAME` (bare NAME = User)."""
    if text.startswith(SA_USER_PREFIX):
        namespace, _, name = text[len(SA_USER_PREFIX) :].partition(":")
        if not namespace or not name:
            raise ValueError(f"malformed service account name {text!r} (want system:serviceaccount:NS:NAME)")
        return Subject(kind="ServiceAccount", namespace=namespace, name=name)
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in ("serviceaccount", "sa"):
        namespace, _, name = rest.partition("/")
        if not namespace or not name:
            raise ValueError(f"malformed service account {text!r} (want ServiceAccount:NS/NAME)")
        return Subject(kind="ServiceAccount", namespace=namespace, name=name)
    if sep and kind.lower() in ("user", "group") and rest:
        return Subject(kind=kind.capitalize(), name=rest)
    if not text:
        raise ValueError("empty subject")
    return Subject(kind="User", name=text)


def is_bootstrap(obj: Obj) -> bool:
    """A default RBAC object kube-apiserver recreates and reconciles (unless autoupdate is "false")."""
    # Same answer as labels_of(obj)/annotations_of(obj), without copying every label (called per binding and role).
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    key, value = BOOTSTRAP_LABEL
    if not isinstance(labels, dict) or key not in labels or str(labels[key]) != value:
        return False
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    autoupdate = annotations.get(AUTOUPDATE_ANNOTATION) if isinstance(annotations, dict) else None
    return autoupdate is None or str(autoupdate) != "false"


def own_rules(obj: Obj) -> tuple[PolicyRule, ...]:
    """A role's stored rules as written (duplicates kept, entries that are not mappings skipped)."""
    return tuple(PolicyRule.parse(r) for r in obj.get("rules") or [] if isinstance(r, dict))


@cache
def _shipped_rules() -> dict[int, tuple[Obj, tuple[PolicyRule, ...]]]:
    """own_rules() of the shipped default ClusterRoles (immutable, the same objects for the whole process)."""
    return {id(obj): (obj, own_rules(obj)) for obj in bootstrap_cluster_roles()}


def _parse_rules(obj: Obj) -> tuple[PolicyRule, ...]:
    return tuple(dict.fromkeys(own_rules(obj)))


def resolve_cluster_roles(
    cluster_roles: Iterable[Obj], parse: Callable[[Obj], tuple[PolicyRule, ...]] = _parse_rules
) -> dict[str, tuple[PolicyRule, ...]]:
    """Rules per ClusterRole name, aggregationRule selectors resolved to a fixpoint (parse: a role's
    de-duplicated stored rules)."""
    by_name = {name_of(obj): obj for obj in cluster_roles}
    rules = {name: parse(obj) for name, obj in by_name.items()}
    names = sorted(by_name)
    labels = {name: labels_of(by_name[name]) for name in names}
    # Roles by label (key, value), in name order: a selector's matchLabels picks its candidates from here instead
    # of testing every role (a cluster's ~60 aggregating roles against its ~600 roles was most of the resolution).
    by_label: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in names:
        for pair in labels[name].items():
            by_label[pair].append(name)
    aggregated: dict[str, list[str]] = {}
    for name, obj in sorted(by_name.items()):
        selectors = (obj.get("aggregationRule") or {}).get("clusterRoleSelectors")
        if not isinstance(selectors, list):
            continue
        sources: dict[str, None] = {}
        for selector in selectors:
            if not isinstance(selector, dict):
                continue
            for other in _candidates(selector, names, by_label):
                if other != name and other not in sources and selector_matches(selector, labels[other]):
                    sources[other] = None
        aggregated[name] = list(sources)
        rules[name] = ()  # the controller overwrites whatever rules are stored
    for _ in range(len(aggregated) + 1):
        changed = False
        for name, source_names in aggregated.items():
            merged = tuple(dict.fromkeys(rule for source in source_names for rule in rules[source]))
            if merged != rules[name]:
                rules[name], changed = merged, True
        if not changed:
            break
    return rules


def _candidates(
    selector: Mapping[str, Any], names: list[str], by_label: Mapping[tuple[str, str], list[str]]
) -> list[str]:
    """The roles (in name order) that can match a selector: those carrying the rarest of its matchLabels, or every
    role when it has none (selector_matches() still decides)."""
    match_labels = selector.get("matchLabels")
    if not match_labels or not isinstance(match_labels, dict):
        return names
    return min((by_label.get((str(key), str(value)), []) for key, value in match_labels.items()), key=len)


def _subjects_of(
    binding: Obj, namespace: str, interned: dict[SubjectKey, Subject] | None = None
) -> tuple[Subject, ...]:
    """A binding's subjects the authorizer can match, de-duplicated in order. interned: one Subject per
    (kind, namespace, name), shared by every binding that names it (built once per index)."""
    pool: dict[SubjectKey, Subject] = {} if interned is None else interned
    keys: dict[SubjectKey, None] = {}
    for raw in binding.get("subjects") or []:
        if not isinstance(raw, dict):
            continue
        kind, name = str(raw.get("kind", "")), str(raw.get("name", ""))
        if kind == "ServiceAccount":
            sa_namespace = str(raw.get("namespace") or namespace)
            if sa_namespace:  # a ClusterRoleBinding SA subject without namespace matches nobody
                key = (kind, sa_namespace, name)
                if key not in pool:
                    pool[key] = Subject.trusted(kind, name, sa_namespace)
                keys[key] = None
        elif kind in ("User", "Group"):
            key = (kind, "", name)
            if key not in pool:
                pool[key] = Subject.trusted(kind, name)
            keys[key] = None
    return tuple(pool[key] for key in keys)


def _subject_key(subject: Subject) -> SubjectKey:
    return (subject.kind, subject.namespace, subject.name)


@dataclass
class PermissionIndex:
    """All bindings with their resolved rules, indexed by subject."""

    bindings: list[Binding] = field(default_factory=list)
    by_subject: dict[SubjectKey, list[int]] = field(default_factory=dict)
    role_rules: dict[tuple[str, str, str], tuple[PolicyRule, ...]] = field(default_factory=dict)
    # Each role object's stored rules as parsed once for the index (id -> (object, rules)); see stored_rules().
    parsed: dict[int, tuple[Obj, tuple[PolicyRule, ...]]] = field(default_factory=dict, repr=False)
    _subjects: dict[SubjectKey, Subject] = field(default_factory=dict, repr=False)
    _refs: dict[tuple[str, str, str], ObjectRef] = field(default_factory=dict, repr=False)
    _granted: frozenset[SubjectKey] | None = field(default=None, repr=False)
    _kept: "KeptPermissions | None" = field(default=None, repr=False)

    @classmethod
    def build(cls, snapshot: ClusterSnapshot, kept: "KeptPermissions | None" = None) -> "PermissionIndex":
        """The index of the snapshot's bindings and roles; with `kept`, reusing what earlier builds derived from
        the same objects (the same index as without)."""
        if kept is not None:
            return kept.build(snapshot)
        index = cls()
        # Default ClusterRoles the snapshot lacks come from the shipped bootstrap data.
        cluster_rules = resolve_cluster_roles(with_bootstrap_roles(snapshot.cluster_roles), index._parse_unique)
        for name, rules in cluster_rules.items():
            index.role_rules[("ClusterRole", "", name)] = RuleSet(rules)
        for role in snapshot.roles:
            index.role_rules[("Role", namespace_of(role), name_of(role))] = RuleSet(index._parse_unique(role))
        for obj in snapshot.cluster_role_bindings:
            index._add_binding(obj, "")
        for obj in snapshot.role_bindings:
            index._add_binding(obj, namespace_of(obj))
        return index

    def stored_rules(self, obj: Obj) -> tuple[PolicyRule, ...]:
        """own_rules(obj), parsed once per role object per index (the shipped default roles once per process; with
        kept parts, once per role object while it is kept)."""
        if self._kept is not None:
            return self._kept.own_rules(obj)
        entry = self.parsed.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        shipped = _shipped_rules().get(id(obj))
        rules = shipped[1] if shipped is not None and shipped[0] is obj else own_rules(obj)
        self.parsed[id(obj)] = (obj, rules)  # the object is kept, so its id is not reused meanwhile
        return rules

    def _parse_unique(self, obj: Obj) -> tuple[PolicyRule, ...]:
        return tuple(dict.fromkeys(self.stored_rules(obj)))

    def _ref(self, kind: str, namespace: str, name: str) -> ObjectRef:
        key = (kind, namespace, name)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = ObjectRef.trusted(kind, name, namespace, RBAC_API_VERSION)
        return ref

    def _add_binding(self, obj: Obj, namespace: str) -> None:
        role_ref = obj.get("roleRef") or {}
        role_kind, role_name = str(role_ref.get("kind", "")), str(role_ref.get("name", ""))
        # A ClusterRoleBinding may only reference a ClusterRole; Roles live in the binding's namespace.
        role_namespace = namespace if role_kind == "Role" else ""
        valid = role_kind == "ClusterRole" or (role_kind == "Role" and bool(namespace))
        rules = self.role_rules.get((role_kind, role_namespace, role_name)) if valid else None
        subjects = _subjects_of(obj, namespace, self._subjects)
        binding = _binding_of(obj, namespace, self._ref(role_kind, role_namespace, role_name), subjects, rules)
        position = len(self.bindings)
        self.bindings.append(binding)
        by_subject = self.by_subject
        for subject in subjects:
            key = (subject.kind, subject.namespace, subject.name)
            positions = by_subject.get(key)
            if positions is None:
                by_subject[key] = [position]
            else:
                positions.append(position)

    def granted_keys(self) -> frozenset[SubjectKey]:
        """Subject keys named by at least one binding that is not a default (bootstrap) one; computed once."""
        if self._granted is None:
            bindings = self.bindings
            self._granted = frozenset(
                key for key, positions in self.by_subject.items() if any(not bindings[p].bootstrap for p in positions)
            )
        return self._granted

    def service_account_bound(self, namespace: str, name: str) -> bool:
        """Does a non-bootstrap binding give the ServiceAccount permissions (directly or via its groups)?
        Same answer as permissions.service_account_bindings() being non-empty."""
        granted = self.granted_keys()
        return any(key in granted for key in service_account_keys(namespace, name))

    def bindings_for(self, user: Subject | UserInfo) -> Iterator[tuple[Subject, Binding]]:
        """Bindings that apply to an identity, each with the binding subject that matched."""
        info = user if isinstance(user, UserInfo) else UserInfo.of(user)
        seen: set[int] = set()
        for key in info.subject_keys():
            for position in self.by_subject.get(key, []):
                if position in seen:
                    continue
                seen.add(position)
                binding = self.bindings[position]
                yield _matched(binding, key), binding

    def grants_for(self, subject: Subject | UserInfo) -> list[Grant]:
        """Effective grants of an identity (including through its groups), expanded per verb/group/resource."""
        return _expanded(self.bindings_for(subject))

    def direct_grants(self, subject: Subject) -> list[Grant]:
        """Grants of the bindings that name this subject itself (not one of its groups), expanded."""
        own = _subject_key(subject)
        bindings = (self.bindings[position] for position in self.by_subject.get(own, []))
        return _expanded((_matched(binding, own), binding) for binding in bindings)

    def allows(
        self,
        subject: Subject | UserInfo,
        verb: str,
        resource: str,
        namespace: str,
        api_group: str = "",
        name: str = "",
        subresource: str = "",
    ) -> bool:
        """The RBAC authorizer's decision for a resource request (`pods/exec` or subresource="exec")."""
        info = subject if isinstance(subject, UserInfo) else UserInfo.of(subject)
        if MASTERS_GROUP in info.groups:
            return True
        if not subresource and "/" in resource:
            resource, _, subresource = resource.partition("/")
        return any(
            binding.allows(verb, api_group, resource, subresource, namespace, name)
            for _, binding in self.bindings_for(info)
        )

    def allows_url(self, subject: Subject | UserInfo, verb: str, path: str) -> bool:
        """The RBAC decision for a non-resource request (only ClusterRoleBindings apply)."""
        info = subject if isinstance(subject, UserInfo) else UserInfo.of(subject)
        if MASTERS_GROUP in info.groups:
            return True
        return any(
            not binding.namespace and any(rule.allows_url(verb, path) for rule in binding.rules)
            for _, binding in self.bindings_for(info)
        )

    def who_can(
        self, verb: str, resource: str, namespace: str, api_group: str = "", name: str = ""
    ) -> list[tuple[Subject, Grant]]:
        """Binding subjects allowed the request, each with the grant that allows it (members of
        system:masters are allowed everything and are not listed)."""
        resource, _, subresource = resource.partition("/")
        results: list[tuple[Subject, Grant]] = []
        for binding in self.bindings:
            if binding.namespace and binding.namespace != namespace:
                continue
            rule = next((r for r in binding.rules if r.allows(verb, api_group, resource, subresource, name)), None)
            if rule is None:
                continue
            combined = f"{resource}/{subresource}" if subresource else resource
            matched_resource = combined if combined in rule.resources else next(
                r for r in ("*", f"*/{subresource}") if r in rule.resources
            )  # fmt: skip
            for subject in binding.subjects:
                grant = Grant(
                    subject=subject,
                    namespace=binding.namespace,
                    api_group=api_group if api_group in rule.api_groups else "*",
                    resource=matched_resource,
                    verb=verb if verb in rule.verbs else "*",
                    resource_names=rule.resource_names,
                    via_binding=binding.ref,
                    via_role=binding.role_ref,
                )
                results.append((subject, grant))
        results.sort(key=lambda pair: (str(pair[0]), pair[1].namespace, pair[1].via_binding.name))
        return results


def _matched(binding: Binding, key: SubjectKey) -> Subject:
    """The binding's subject with this key."""
    return next(s for s in binding.subjects if _subject_key(s) == key)


def _expanded(matches: Iterable[tuple[Subject, Binding]]) -> list[Grant]:
    return [
        grant for matched, binding in matches for rule in binding.rules for grant in _expand(matched, binding, rule)
    ]


def _expand(subject: Subject, binding: Binding, rule: PolicyRule) -> Iterator[Grant]:
    for url in sorted(rule.non_resource_urls):
        for verb in sorted(rule.verbs):
            yield Grant(subject, binding.namespace, "", "", verb, frozenset(), binding.ref, binding.role_ref, url)
    for group in sorted(rule.api_groups):
        for resource in sorted(rule.resources):
            for verb in sorted(rule.verbs):
                yield Grant(
                    subject, binding.namespace, group, resource, verb, rule.resource_names, binding.ref,
                    binding.role_ref,
                )  # fmt: skip


KEPT_PERMISSIONS = "kept_permissions"  # the AuditContext.cache key of a KeptPermissions
KEPT_PER_GENERATION = 2048  # bindings (and as many roles) kept per generation: at most twice that in all
RESOLUTIONS_KEPT = 3  # ClusterRole sets whose resolved rules are kept (the cluster scope's, and a few subsets)
_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")


class Generations(Generic[_Key, _Value]):
    """A bounded memo: an entry used within the last two generations stays, older ones go. A generation ends when
    `limit` entries were added or used in it (each then moves to the new one when used again)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.fresh: dict[_Key, _Value] = {}
        self.old: dict[_Key, _Value] = {}

    def get(self, key: _Key) -> _Value | None:
        value = self.fresh.get(key)
        if value is None:
            value = self.old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: _Key, value: _Value) -> None:
        if len(self.fresh) >= self.limit and key not in self.fresh:
            self.old, self.fresh = self.fresh, {}
        self.fresh[key] = value

    def __len__(self) -> int:
        return len(self.fresh) + len(self.old)


@dataclass(frozen=True, slots=True)
class _KeptBinding:
    obj: Obj  # the binding object it was derived from (the same object, not an equal one)
    role: tuple[str, str, str] | None  # the role_rules key its roleRef names (None: a roleRef that cannot resolve)
    rules: tuple[PolicyRule, ...] | None  # what role_rules held for it then (the same object)
    binding: Binding
    keys: tuple[SubjectKey, ...]


class KeptPermissions:
    """What PermissionIndex.build derives from each role and binding object, kept from one build to the next, so
    a re-audit pays for the objects that changed, not for every binding in its snapshot: a role's parsed rules
    and RuleSet, the ClusterRoles' aggregation resolved (per set of ClusterRole objects), and each binding's
    Binding (reused while the binding object and its role's RuleSet are the same objects). Validity is object
    identity: the watch cache replaces an object that changes and keeps the stored one otherwise, and nothing
    changes an object in place. Bounded: entries not used within two generations go (Generations)."""

    def __init__(self, limit: int = KEPT_PER_GENERATION) -> None:
        self._parsed: Generations[tuple[str, str, str], tuple[Obj, tuple[PolicyRule, ...], tuple[PolicyRule, ...]]]
        self._parsed = Generations(limit)
        self._roles: Generations[tuple[str, str], tuple[Obj, RuleSet]] = Generations(limit)
        self._bindings: Generations[tuple[str, str], _KeptBinding] = Generations(limit)
        # Shared by the objects derived afresh only: smaller (a kept binding holds its own)
        pooled = max(1, limit // 4)
        self._subjects: Generations[SubjectKey, Subject] = Generations(pooled)
        self._refs: Generations[tuple[str, str, str], ObjectRef] = Generations(pooled)
        self._rule_pool: Generations[PolicyRule, PolicyRule] = Generations(pooled)
        # ids of a ClusterRole list (objects kept alive) -> the list, its resolved RuleSets by name; latest last
        self._resolutions: dict[tuple[int, ...], tuple[list[Obj], dict[str, RuleSet]]] = {}
        self.reused = 0  # bindings taken from earlier builds (for benchmarks and tests)
        self.derived = 0  # bindings derived afresh

    def own_rules(self, obj: Obj) -> tuple[PolicyRule, ...]:
        """own_rules(obj), parsed once while the object is kept."""
        return self._parse(obj)[1]

    def _unique_rules(self, obj: Obj) -> tuple[PolicyRule, ...]:
        return self._parse(obj)[2]

    def _parse(self, obj: Obj) -> tuple[Obj, tuple[PolicyRule, ...], tuple[PolicyRule, ...]]:
        key = (str(obj.get("kind", "")), namespace_of(obj), name_of(obj))
        entry = self._parsed.get(key)
        if entry is None or entry[0] is not obj:
            shipped = _shipped_rules().get(id(obj))
            rules = shipped[1] if shipped is not None and shipped[0] is obj else self._shared(own_rules(obj))
            entry = (obj, rules, tuple(dict.fromkeys(rules)))
            self._parsed.put(key, entry)
        return entry

    def _shared(self, rules: tuple[PolicyRule, ...]) -> tuple[PolicyRule, ...]:
        """The rules with each one an equal rule kept before, if any: roles repeat a few rule shapes (a chart's
        roles in every namespace), and a parsed rule holds five sets."""
        shared = []
        for rule in rules:
            known = self._rule_pool.get(rule)
            if known is None:
                self._rule_pool.put(rule, rule)
                known = rule
            shared.append(known)
        return tuple(shared)

    def _cluster_role_rules(self, cluster_roles: list[Obj]) -> dict[str, RuleSet]:
        """resolve_cluster_roles() as RuleSets: the same dict while the list holds the same objects; after a change,
        a RuleSet whose rules did not change is the same object as before."""
        signature = tuple(map(id, cluster_roles))
        entry = self._resolutions.pop(signature, None)
        if entry is None:
            latest = next(reversed(self._resolutions.values()))[1] if self._resolutions else {}
            resolved: dict[str, RuleSet] = {}
            for name, rules in resolve_cluster_roles(cluster_roles, self._unique_rules).items():
                previous = latest.get(name)
                resolved[name] = previous if previous is not None and previous == rules else RuleSet(rules)
            entry = (cluster_roles, resolved)
            while len(self._resolutions) >= RESOLUTIONS_KEPT:
                del self._resolutions[next(iter(self._resolutions))]
        self._resolutions[signature] = entry  # the latest last
        return entry[1]

    def _role_rule_set(self, role: Obj, namespace: str, name: str) -> RuleSet:
        entry = self._roles.get((namespace, name))
        if entry is None or entry[0] is not role:
            entry = (role, RuleSet(self._unique_rules(role)))
            self._roles.put((namespace, name), entry)
        return entry[1]

    def _role_ref(self, kind: str, namespace: str, name: str) -> ObjectRef:
        key = (kind, namespace, name)
        ref = self._refs.get(key)
        if ref is None:
            ref = ObjectRef.trusted(kind, name, namespace, RBAC_API_VERSION)
            self._refs.put(key, ref)
        return ref

    def _subjects_of(self, obj: Obj, namespace: str) -> tuple[Subject, ...]:
        """_subjects_of() with Subjects shared across builds."""
        pool: dict[SubjectKey, Subject] = {}
        for raw in obj.get("subjects") or []:
            if not isinstance(raw, dict):
                continue
            kind, name = str(raw.get("kind", "")), str(raw.get("name", ""))
            if kind == "ServiceAccount":
                key = (kind, str(raw.get("namespace") or namespace), name)
            elif kind in ("User", "Group"):
                key = (kind, "", name)
            else:
                continue
            subject = self._subjects.get(key)
            if subject is not None:
                pool[key] = subject
        subjects = _subjects_of(obj, namespace, pool)
        for subject in subjects:
            self._subjects.put(_subject_key(subject), subject)
        return subjects

    @staticmethod
    def _rules_of(
        role: tuple[str, str, str] | None, role_rules: Mapping[tuple[str, str, str], tuple[PolicyRule, ...]]
    ) -> tuple[PolicyRule, ...] | None:
        return role_rules.get(role) if role is not None else None

    def _binding(
        self, obj: Obj, namespace: str, role_rules: Mapping[tuple[str, str, str], tuple[PolicyRule, ...]]
    ) -> _KeptBinding:
        key = (namespace, name_of(obj))
        entry = self._bindings.get(key)
        if entry is not None and entry.obj is obj and self._rules_of(entry.role, role_rules) is entry.rules:
            self.reused += 1
            return entry
        role_ref = obj.get("roleRef") or {}
        role_kind, role_name = str(role_ref.get("kind", "")), str(role_ref.get("name", ""))
        # A ClusterRoleBinding may only reference a ClusterRole; Roles live in the binding's namespace.
        role_namespace = namespace if role_kind == "Role" else ""
        valid = role_kind == "ClusterRole" or (role_kind == "Role" and bool(namespace))
        role = (role_kind, role_namespace, role_name) if valid else None
        rules = self._rules_of(role, role_rules)
        subjects = self._subjects_of(obj, namespace)
        binding = _binding_of(obj, namespace, self._role_ref(role_kind, role_namespace, role_name), subjects, rules)
        entry = _KeptBinding(obj, role, rules, binding, tuple(map(_subject_key, subjects)))
        self._bindings.put(key, entry)
        self.derived += 1
        return entry

    def build(self, snapshot: ClusterSnapshot) -> PermissionIndex:
        """PermissionIndex.build(snapshot), from the kept parts (the same bindings in the same order, the same
        subjects, rules and role rules)."""
        index = PermissionIndex(_kept=self)
        role_rules = index.role_rules
        for name, rules in self._cluster_role_rules(with_bootstrap_roles(snapshot.cluster_roles)).items():
            role_rules[("ClusterRole", "", name)] = rules
        for role in snapshot.roles:
            namespace, name = namespace_of(role), name_of(role)
            role_rules[("Role", namespace, name)] = self._role_rule_set(role, namespace, name)
        bindings, by_subject = index.bindings, index.by_subject
        for pool, clustered in ((snapshot.cluster_role_bindings, True), (snapshot.role_bindings, False)):
            for obj in pool:
                entry = self._binding(obj, "" if clustered else namespace_of(obj), role_rules)
                position = len(bindings)
                bindings.append(entry.binding)
                for key in entry.keys:
                    positions = by_subject.get(key)
                    if positions is None:
                        by_subject[key] = [position]
                    else:
                        positions.append(position)
        return index


def _binding_of(
    obj: Obj, namespace: str, role: ObjectRef, subjects: tuple[Subject, ...], rules: tuple[PolicyRule, ...] | None
) -> Binding:
    """A binding object as the index holds it (rules None: its role is missing or of a kind it cannot bind)."""
    return Binding(
        ObjectRef.trusted(str(obj.get("kind", "")), name_of(obj), namespace, RBAC_API_VERSION),
        role,
        namespace,
        subjects,
        rules or (),
        rules is not None,
        is_bootstrap(obj),
    )


def permission_index(snapshot: ClusterSnapshot, ctx: AuditContext) -> PermissionIndex:
    """The snapshot's PermissionIndex, built once per audit (cached in ctx.cache["permissions"]), from the parts
    kept across audits when the caller keeps them (ctx.cache[KEPT_PERMISSIONS], the incremental audit's)."""
    cached = ctx.cache.get("permissions")
    if isinstance(cached, PermissionIndex) and ctx.cache.get("permissions_snapshot") is snapshot:
        return cached
    kept = ctx.cache.get(KEPT_PERMISSIONS)
    index = PermissionIndex.build(snapshot, kept if isinstance(kept, KeptPermissions) else None)
    ctx.cache["permissions"] = index
    ctx.cache["permissions_snapshot"] = snapshot
    return index


def is_excluded(subject: Subject, ctx: AuditContext) -> bool:
    """Built-in system subjects the RBAC rules ignore (ctx.excluded_subject_prefixes)."""
    return subject_username(subject).startswith(ctx.excluded_subject_prefixes)


def service_account_bindings(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, name: str) -> list[Binding]:
    """Bindings that give the ServiceAccount permissions (directly or via its groups), built-in
    bootstrap bindings (discovery, basic-user, ...) left out."""
    subject = Subject(kind="ServiceAccount", name=name, namespace=namespace)
    return [b for _, b in permission_index(snapshot, ctx).bindings_for(subject) if not b.bootstrap]
