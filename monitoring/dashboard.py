"""The access-hygiene Grafana dashboard, built with grafana-foundation-sdk.

Queries use a `${datasource}` variable (any Prometheus) and a `$namespace_class` filter (cluster,
privileged, exempt, other: the default series carry no per-namespace label, so their number does not grow
with the cluster); `$__rate_interval` is left to Grafana. Panels that should read 0 rather than "No data"
when all is well use `or vector(0)`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "access-hygiene"
TITLE = "Access hygiene"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace_class=~"$namespace_class"'
RATE = "$__rate_interval"
# Process metrics carry no access_hygiene_ prefix: pick the targets that also expose our build info.
OPERATOR_PROCESS = "{metric} and on (job, instance) access_hygiene_build_info"

AnyPanel = stat.Panel | table.Panel | bargauge.Panel | timeseries.Panel


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def build(self, ref_id: str) -> Dataquery:
        query = Dataquery().expr(self.expr).ref_id(ref_id).datasource(DATASOURCE)
        if self.legend:
            query = query.legend_format(self.legend)
        if self.table:
            query = query.format(PromQueryFormat.TABLE)
        return query.instant() if self.instant or self.table else query.range()


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value, color) for value, color in steps])


GREEN_IF_ZERO = thresholds((None, "green"), (1, "red"))


def with_queries(panel: Any, queries: list[Query], panel_id: int, title: str, description: str) -> Any:
    panel = panel.id(panel_id).title(title).description(description).datasource(DATASOURCE)
    for index, query in enumerate(queries):
        panel = panel.with_target(query.build(chr(ord("A") + index)))
    return panel


def stat_panel(*, unit: str = "none", colors: ThresholdsConfig = GREEN_IF_ZERO) -> stat.Panel:
    return (
        stat.Panel()
        .unit(unit)
        .thresholds(colors)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .height(5)
        .span(6)
    )


def bar_panel(unit: str = "none") -> bargauge.Panel:
    return (
        bargauge.Panel()
        .unit(unit)
        .display_mode(BarGaugeDisplayMode.BASIC)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .height(8)
        .span(12)
    )


def table_panel() -> table.Panel:
    return table.Panel().height(8).span(12)


def series_panel(unit: str = "none") -> timeseries.Panel:
    return timeseries.Panel().unit(unit).height(8).span(12)


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    make: Callable[[], AnyPanel]
    queries: list[Query]


SECTIONS: list[tuple[str, list[PanelSpec]]] = [
    (
        "Violations",
        [
            PanelSpec(
                "Critical violations",
                "Active critical findings in the latest scan.",
                lambda: stat_panel(),
                [Query(f'sum(access_hygiene_violations{{severity="critical",{NS}}}) or vector(0)')],
            ),
            PanelSpec(
                "High violations",
                "Active high-severity findings in the latest scan.",
                lambda: stat_panel(),
                [Query(f'sum(access_hygiene_violations{{severity="high",{NS}}}) or vector(0)')],
            ),
            PanelSpec(
                "Anonymous access bindings",
                "Bindings granting permissions to system:anonymous or system:unauthenticated (AH-RBAC-002).",
                lambda: stat_panel(),
                [Query('sum(access_hygiene_violations{rule_id="AH-RBAC-002"}) or vector(0)')],
            ),
            PanelSpec(
                "Exempted findings",
                "Findings suppressed by a valid exemption.",
                lambda: stat_panel(colors=thresholds((None, "blue"))),
                [Query(f"sum(access_hygiene_violations_exempted{{{NS}}}) or vector(0)")],
            ),
            PanelSpec(
                "Violations by severity",
                "Active findings over time, by severity.",
                series_panel,
                [Query(f"sum by (severity) (access_hygiene_violations{{{NS}}})", legend="{{severity}}")],
            ),
            PanelSpec(
                "Top rules",
                "Rules with the most active findings.",
                bar_panel,
                [
                    Query(
                        f"topk(10, sum by (rule_id) (access_hygiene_violations{{{NS}}}))",
                        legend="{{rule_id}}",
                        instant=True,
                    )
                ],
            ),
            PanelSpec(
                "Top namespaces",
                "Namespaces with the most active findings (_cluster: cluster-scoped objects). The operator "
                "exports the top 20; per-namespace series for all need detailed metrics.",
                bar_panel,
                [
                    Query(
                        f"topk(10, max by (namespace) (access_hygiene_top_namespace_violations{{{NS}}}))",
                        legend="{{namespace}}",
                        instant=True,
                    )
                ],
            ),
            PanelSpec(
                "Violations by rule, severity and namespace class",
                "Every active (rule, severity, namespace class) combination in the latest scan. Run "
                "`access-hygiene scan` for the objects.",
                table_panel,
                [
                    Query(
                        f"sum by (rule_id, severity, namespace_class) (access_hygiene_violations{{{NS}}})",
                        table=True,
                    )
                ],
            ),
        ],
    ),
    (
        "Risky subjects",
        [
            PanelSpec(
                "Top risky ServiceAccounts",
                "ServiceAccounts holding the most sensitive capabilities (value: how many). The operator "
                "exports the top 20.",
                table_panel,
                [
                    Query(
                        "topk(20, max by (namespace, serviceaccount)"
                        f" (access_hygiene_top_serviceaccount_capabilities{{{NS}}}))",
                        table=True,
                    )
                ],
            ),
            PanelSpec(
                "Granted but unused (audit webhook)",
                "ServiceAccounts with the most granted (verb, resource) pairs they did not use while observed long "
                "enough (continuous mode, opt-in: auditWebhook.enabled). Empty when continuous mode is off.",
                table_panel,
                [
                    Query(
                        "topk(20, max by (namespace, serviceaccount) (access_hygiene_unused_grants))",
                        table=True,
                    )
                ],
            ),
            PanelSpec(
                "ServiceAccounts by capability",
                "How many ServiceAccounts hold each sensitive capability.",
                bar_panel,
                [
                    Query(
                        f"sum by (capability) (access_hygiene_serviceaccounts_with_capability{{{NS}}})",
                        legend="{{capability}}",
                        instant=True,
                    )
                ],
            ),
        ],
    ),
    (
        "Namespace controls",
        [
            PanelSpec(
                "Control coverage",
                "Share of governed namespaces where each hygiene control is in place.",
                lambda: bar_panel("percentunit"),
                [
                    Query(
                        f'sum by (control) (access_hygiene_namespaces_by_control{{state="in-place",{NS}}})'
                        f" / sum by (control) (access_hygiene_namespaces_by_control{{{NS}}})",
                        legend="{{control}}",
                        instant=True,
                    )
                ],
            ),
            PanelSpec(
                "Missing controls",
                "How many governed namespaces miss each hygiene control, by namespace class. The namespace "
                "annotation accesshygiene.io/hygiene-summary and `access-hygiene scan` name them.",
                table_panel,
                [
                    Query(
                        "sum by (control, namespace_class)"
                        f' (access_hygiene_namespaces_by_control{{state="missing",{NS}}}) > 0',
                        table=True,
                    )
                ],
            ),
        ],
    ),
    (
        "Policies and exemptions",
        [
            PanelSpec(
                "AccessPolicies by state",
                "AccessPolicies that are ready, not ready, or refused by the grant ceiling.",
                lambda: bar_panel(),
                [Query("sum by (state) (access_hygiene_policies)", legend="{{state}}", instant=True)],
            ),
            PanelSpec(
                "Exemptions by state",
                "Exemption annotations found: active, expired (no longer applied) or invalid.",
                lambda: bar_panel(),
                [Query("sum by (state) (access_hygiene_exemptions)", legend="{{state}}", instant=True)],
            ),
            PanelSpec(
                "Managed objects",
                "Objects the operator owns, by kind.",
                lambda: bar_panel(),
                [Query("sum by (kind) (access_hygiene_managed_objects)", legend="{{kind}}", instant=True)],
            ),
            PanelSpec(
                "Exempted findings by rule",
                "Findings suppressed by exemptions over time.",
                series_panel,
                [Query(f"sum by (rule_id) (access_hygiene_violations_exempted{{{NS}}})", legend="{{rule_id}}")],
            ),
        ],
    ),
    (
        "Operator health",
        [
            PanelSpec(
                "Last scan age",
                "Time since the operator last completed a full cluster scan.",
                lambda: stat_panel(unit="s", colors=thresholds((None, "green"), (300, "orange"), (600, "red"))),
                [Query("time() - max(access_hygiene_last_scan_timestamp_seconds)")],
            ),
            PanelSpec(
                "Scan duration",
                "Duration of the latest full scan.",
                lambda: stat_panel(unit="s", colors=thresholds((None, "green"), (30, "orange"))),
                [Query("max(access_hygiene_scan_duration_seconds)")],
            ),
            PanelSpec(
                "Operator version",
                "Version of the running operator.",
                lambda: stat_panel(colors=thresholds((None, "blue"))),
                [Query("max by (version) (access_hygiene_build_info)", legend="{{version}}")],
            ),
            PanelSpec(
                "Operator memory",
                "Resident memory of the operator process (the target that exposes access_hygiene_build_info).",
                lambda: stat_panel(unit="bytes", colors=thresholds((None, "green"), (512 * 2**20, "orange"))),
                [Query(f"max({OPERATOR_PROCESS.format(metric='process_resident_memory_bytes')})")],
            ),
            PanelSpec(
                "Reconcile rate",
                "Handler runs per second, by handler and outcome.",
                lambda: series_panel("ops"),
                [
                    Query(
                        f"sum by (handler, outcome) (rate(access_hygiene_reconcile_total[{RATE}]))",
                        legend="{{handler}} {{outcome}}",
                    )
                ],
            ),
            PanelSpec(
                "Reconcile error ratio",
                "Share of handler runs that failed.",
                lambda: series_panel("percentunit"),
                [
                    Query(
                        f'(sum by (handler) (rate(access_hygiene_reconcile_total{{outcome="error"}}[{RATE}]))'
                        f" or sum by (handler) (rate(access_hygiene_reconcile_total[{RATE}])) * 0)"
                        f" / sum by (handler) (rate(access_hygiene_reconcile_total[{RATE}]))",
                        legend="{{handler}}",
                    )
                ],
            ),
            PanelSpec(
                "Reconcile duration p95",
                "95th percentile handler run time.",
                lambda: series_panel("s"),
                [
                    Query(
                        "histogram_quantile(0.95, sum by (handler, le)"
                        f" (rate(access_hygiene_reconcile_duration_seconds_bucket[{RATE}])))",
                        legend="{{handler}}",
                    )
                ],
            ),
            PanelSpec(
                "Scan duration over time",
                "Duration of each full scan.",
                lambda: series_panel("s"),
                [Query("max(access_hygiene_scan_duration_seconds)", legend="scan")],
            ),
        ],
    ),
]


def build_dashboard() -> Dashboard:
    datasource = DatasourceVariable("datasource").label("Data source").type("prometheus")
    namespace_class = (
        QueryVariable("namespace_class")
        .label("Namespace class")
        .datasource(DATASOURCE)
        .query("label_values(access_hygiene_violations, namespace_class)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    dashboard = (
        Dashboard(TITLE)
        .uid(UID)
        .description("Risky access, namespace hygiene controls and operator health reported by access-hygiene.")
        .tags(["access-hygiene", "kubernetes", "rbac", "security"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(datasource)
        .with_variable(namespace_class)
    )
    panel_id = 1
    for section, panels in SECTIONS:
        dashboard = dashboard.with_row(Row(section).id(panel_id))
        panel_id += 1
        for spec in panels:
            dashboard = dashboard.with_panel(
                with_queries(spec.make(), spec.queries, panel_id, spec.title, spec.description)
            )
            panel_id += 1
    return dashboard


def render_dashboard() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build_dashboard().build()) + "\n"
