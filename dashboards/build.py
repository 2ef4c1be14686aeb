"""Build the boards of dashboards/panels.py with grafana-foundation-sdk and write the JSON.

The SDK has no builder for the PostgreSQL data source's query model, so `SqlQuery` below is
a minimal Dataquery variant carrying the fields Grafana's SQL data sources read
(rawSql, format, rawQuery, editorMode).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    geomap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.panels import BOARDS, VARIABLES, BoardSpec, PanelSpec

PROVISIONING = Path(__file__).parent / "provisioning"
DASHBOARD_DIR = PROVISIONING / "dashboards"
POSTGRES = dm.DataSourceRef(type_val="grafana-postgresql-datasource", uid="kota-postgres")
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="kota-prometheus")
VIZ: dict[str, Any] = {
    "timeseries": timeseries.Panel,
    "table": table.Panel,
    "stat": stat.Panel,
    "state-timeline": statetimeline.Panel,
    "bargauge": bargauge.Panel,
    "geomap": geomap.Panel,
    "barchart": bargauge.Panel,
}


class SqlQuery(cogvariants.Dataquery):
    """A Grafana SQL data source query (PostgreSQL / TimescaleDB)."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.fmt = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
            "rawSql": self.raw_sql,
            "format": self.fmt,
            "rawQuery": True,
            "editorMode": "code",
        }


class SqlQueryBuilder(Builder[SqlQuery]):
    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self._internal = SqlQuery(ref_id, raw_sql, fmt)

    def build(self) -> SqlQuery:
        return self._internal


def _thresholds(spec: PanelSpec) -> dashboard.ThresholdsConfig:
    steps = [dm.Threshold(value=value, color=colour) for value, colour in spec.thresholds]
    return dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


def _target(spec: PanelSpec) -> Builder[Any]:
    if spec.source == "prometheus":
        return (
            prometheus.Dataquery()
            .expr(spec.query)
            .ref_id("A")
            .legend_format("{{reason}}")
            .datasource({"type": PROMETHEUS.type_val, "uid": PROMETHEUS.uid})
        )
    return SqlQueryBuilder("A", spec.query, spec.fmt)


def build_panel(spec: PanelSpec) -> Builder[dm.Panel]:
    panel: Any = (
        VIZ[spec.viz]()
        .title(spec.title)
        .description(spec.description or spec.title)
        .datasource(PROMETHEUS if spec.source == "prometheus" else POSTGRES)
        .with_target(_target(spec))
        .span(spec.width)
        .height(spec.height)
    )
    if spec.unit:
        panel = panel.unit(spec.unit)
    if spec.thresholds:
        panel = panel.thresholds(_thresholds(spec))
    if spec.threshold_lines and isinstance(panel, timeseries.Panel):
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    return panel


def build_variable(name: str) -> Builder[dm.VariableModel]:
    label, query, multi, include_all, kind = VARIABLES[name]
    if kind == "custom":
        first = query.split(",")[0]
        default = dm.VariableOption(
            text="All" if include_all else first, value="$__all" if include_all else first
        )
        return (
            dashboard.CustomVariable(name)
            .label(label)
            .values(query)
            .multi(multi)
            .include_all(include_all)
            .current(default)
        )
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(POSTGRES)
        .multi(multi)
        .include_all(include_all)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    if include_all:
        variable = variable.current(dm.VariableOption(text="All", value="$__all"))
    return variable


def build_board(board: BoardSpec) -> dict[str, Any]:
    builder = (
        dashboard.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(["kota", "ascn"])
        .timezone("browser")
        .time("now-30d", "now")
        .refresh("5m")
        .editable()
    )
    for name in board.variables:
        builder = builder.with_variable(build_variable(name))
    for spec in board.panels:
        builder = builder.with_panel(build_panel(spec))
    encoded: dict[str, Any] = json.loads(
        JSONEncoder(sort_keys=True, indent=2).encode(builder.build())
    )
    for number, panel in enumerate(encoded["panels"], start=1):
        panel["id"] = number  # stable ids keep the committed JSON diff-friendly
        panel["options"] = panel.get("options") or {}
    return encoded


def board_path(board: BoardSpec) -> Path:
    return DASHBOARD_DIR / board.folder / f"{board.uid}.json"


def render_all() -> dict[Path, str]:
    """Every generated dashboard file and its exact content."""
    return {
        board_path(b): json.dumps(build_board(b), indent=2, sort_keys=True) + "\n" for b in BOARDS
    }


def write_all() -> list[Path]:
    written = []
    for path, text in render_all().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_files() -> list[Path]:
    """Committed dashboard files that differ from what the code generates now."""
    return [p for p, text in render_all().items() if not p.exists() or p.read_text() != text]
