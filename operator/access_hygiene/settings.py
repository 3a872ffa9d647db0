"""Operator configuration: one validated model read from ACCESS_HYGIENE_* environment variables."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.leadership.lease import (
    LEASE_DURATION_SECONDS,
    RENEW_DEADLINE_SECONDS,
    RETRY_PERIOD_SECONDS,
    LeaseTiming,
)
from access_hygiene.engine.usage import DEFAULT_MAX_KEYS, DEFAULT_MAX_SUBJECTS


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCESS_HYGIENE_", env_nested_delimiter="__", frozen=True)

    mode: Literal["audit", "enforce"] = Field(default="audit", description="Default mode for policies and namespaces.")
    operator_namespace: str = "access-hygiene"
    exempt_namespaces: list[str] = Field(default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"])
    exempt_namespace_selector: dict[str, str] = Field(
        default_factory=dict, description="Namespaces with all these labels are exempt."
    )
    privileged_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"])
    # Grant ceiling: the ClusterRole whose rules bound what any AccessPolicy may grant.
    grant_ceiling_cluster_role: str = "access-hygiene-grant-ceiling"
    # Sensitive capabilities an AccessPolicy may request anyway (e.g. "secrets-read", "wildcard").
    allowed_sensitive_capabilities: list[str] = Field(default_factory=list)
    allow_cluster_rules: bool = False
    dns_namespace: str = "kube-system"
    dns_pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    read_secret_metadata: bool = Field(
        default=False, description="Opt-in: list Secret metadata to find legacy service-account tokens."
    )
    metrics_port: int = 9808
    metrics_addr: str = "0.0.0.0"
    # The operator is event-driven (watches); these are safety nets, not polling.
    drift_interval_seconds: float = Field(
        default=3600.0, gt=0, description="Re-check every policy and namespace from the watch cache (no API reads)."
    )
    resync_interval_seconds: float = Field(
        default=21600.0, gt=0, description="Relist every watched kind (besides relists on 410 Gone / reconnect)."
    )
    event_debounce_seconds: float = Field(
        default=0.05, ge=0, le=5, description="Coalesce a burst of watch events into one incremental audit."
    )
    workers: int = Field(
        # 64, not 16: each reconcile writes its objects one after another and mostly waits on the API server; on
        # the realistic population 64 took start -> all Ready ~22 % sooner with less API server CPU
        # (docs/performance.md, run H).
        default=64,
        ge=1,
        le=64,
        description="Concurrent policy/namespace reconciles (they mostly wait on the API).",
    )
    warning_events: bool = Field(
        default=True, description="Post Warning Events on RBAC objects with new findings and on refused AccessPolicies."
    )
    detailed_metrics: bool = False
    write_namespace_summary: bool = Field(
        default=True,
        description="Write the accesshygiene.io/hygiene-summary annotation on namespaces (both modes).",
    )
    write_reports: bool = Field(default=True, description="Write findings as OpenReports Report/ClusterReport objects.")
    report_max_results: int = Field(
        default=500, ge=1, description="Results per OpenReports object (most severe first)."
    )

    admission_enabled: bool = Field(
        default=False, description="Install native admission policies compiled from the rule catalogue."
    )
    # A cluster-scoped object (ClusterRole) the admission policies are owned by: deleting it (helm uninstall)
    # garbage-collects them. Empty: no owner (the operator removes them when admission is switched off).
    admission_owner_cluster_role: str = ""
    admission_role_capabilities: Literal["off", "warn", "deny"] = Field(
        default="warn",
        description="The role-capabilities admission profile (Roles/ClusterRoles granting what the effective-"
        "permission rules report: escalate, bind, impersonate, secrets reads, ...): warn everywhere, deny in enforce "
        "namespaces like the core rules, or off.",
    )

    # Continuous mode (opt-in): receive kube-apiserver audit events as its webhook backend, keep bounded
    # per-ServiceAccount usage counters, report unused grants in metrics and status.unusedRules.
    audit_webhook_enabled: bool = Field(
        default=False, description="Serve an HTTPS audit webhook for kube-apiserver (--audit-webhook-config-file)."
    )
    audit_webhook_addr: str = "0.0.0.0"
    audit_webhook_port: int = Field(default=9443, ge=0, le=65535, description="0 picks a free port (tests).")
    audit_webhook_cert_file: str = Field(default="", description="TLS serving certificate (PEM).")
    audit_webhook_key_file: str = Field(default="", description="TLS serving key (PEM).")
    audit_webhook_token_file: str = Field(
        default="", description="File holding the bearer token kube-apiserver presents (re-read when it changes)."
    )
    audit_webhook_client_ca_file: str = Field(
        default="", description="CA bundle: kube-apiserver must present a client certificate signed by it."
    )
    audit_webhook_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    audit_webhook_advertise_host: str = Field(
        default="", description="This replica's address (the Pod IP) standbys relay audit batches to when it leads."
    )
    # Memory is bounded by the product (~240 B per record: 5000 x 128 is ~150 MiB at worst; docs/performance.md).
    usage_max_subjects: int = Field(
        default=DEFAULT_MAX_SUBJECTS, ge=1, description="ServiceAccounts whose usage is kept."
    )
    usage_max_keys_per_subject: int = Field(
        default=DEFAULT_MAX_KEYS,
        ge=1,
        description="Distinct requests kept per ServiceAccount; beyond, it is never judged.",
    )
    usage_min_window_seconds: float = Field(
        default=7 * 86400.0, ge=0, description="Observe a ServiceAccount this long before calling a grant unused."
    )
    usage_interval_seconds: float = Field(
        default=30.0, gt=0, description="Seconds between judgements (metrics, status.unusedRules)."
    )

    # High availability (docs/ha.md): replicas elect one leader on a Lease in operator_namespace; only it writes.
    leader_election_enabled: bool = Field(
        default=False, description="Elect a leader on a Lease; off: this process is the only replica and leads."
    )
    leader_election_lease_name: str = "access-hygiene"
    leader_election_identity: str = Field(
        default="",
        description="This replica's holder identity; empty: host name (a Pod's name) and a random suffix per process.",
    )
    leader_election_lease_duration_seconds: float = Field(default=LEASE_DURATION_SECONDS, gt=0)
    leader_election_renew_deadline_seconds: float = Field(default=RENEW_DEADLINE_SECONDS, gt=0)
    leader_election_retry_period_seconds: float = Field(default=RETRY_PERIOD_SECONDS, gt=0)

    @model_validator(mode="after")
    def _lease_timing_consistent(self) -> "OperatorSettings":
        self.lease_timing  # noqa: B018  (raises ValueError for an inconsistent timing)
        return self

    @property
    def lease_timing(self) -> LeaseTiming:
        return LeaseTiming(
            lease_duration=self.leader_election_lease_duration_seconds,
            renew_deadline=self.leader_election_renew_deadline_seconds,
            retry_period=self.leader_election_retry_period_seconds,
        )

    @model_validator(mode="after")
    def _audit_webhook_complete(self) -> "OperatorSettings":
        if self.audit_webhook_enabled:
            if not (self.audit_webhook_cert_file and self.audit_webhook_key_file):
                raise ValueError("audit_webhook_enabled needs audit_webhook_cert_file and audit_webhook_key_file")
            if not (self.audit_webhook_token_file or self.audit_webhook_client_ca_file):
                raise ValueError(
                    "audit_webhook_enabled needs authentication: audit_webhook_token_file and/or "
                    "audit_webhook_client_ca_file"
                )
        return self

    @property
    def all_exempt_namespaces(self) -> frozenset[str]:
        return frozenset({*self.exempt_namespaces, self.operator_namespace})

    @property
    def exempt_selector_items(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.exempt_namespace_selector.items()))

    def audit_context(self, now: datetime, **overrides: Any) -> AuditContext:
        """The rules' inputs; `now` comes from the caller's Clock (access_hygiene.clock)."""
        return AuditContext(
            now=now,
            privileged_namespaces=frozenset({*self.privileged_namespaces, self.operator_namespace}),
            exempt_namespaces=self.all_exempt_namespaces,
            exempt_namespace_selector=self.exempt_selector_items,
            dns_namespace=self.dns_namespace,
            dns_pod_labels=tuple(sorted(self.dns_pod_labels.items())),
            **overrides,
        )
