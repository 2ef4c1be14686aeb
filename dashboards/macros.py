"""Expand Grafana's PostgreSQL macros and template variables the way Grafana does.

Grafana expands these server-side (pkg/tsdb/grafana-postgresql-datasource/macros.go) and
interpolates variables in the browser (SQL datasources quote multi-value and include-all
variables as 'a','b' and leave single-value ones raw). No library exposes that logic, so it
is reimplemented here for the tests that run every panel query against a real database.
Only the macros our panels use are supported; an unknown macro is an error, not a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Variable:
    """A template variable's current value(s) and how it was declared."""

    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False


@dataclass(frozen=True)
class QueryContext:
    time_from: datetime
    time_to: datetime
    interval: str = "1h"
    timescaledb: bool = True
    variables: dict[str, Variable] = field(default_factory=dict)


def interval_seconds(text: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhdw])'?", text.strip())
    if not match:
        raise ValueError(f"bad interval {text!r}")
    return int(match[1]) * INTERVAL_UNITS[match[2]]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_group(args: list[str], ctx: QueryContext) -> str:
    column, interval = args[0], args[1] if len(args) > 1 else ctx.interval
    if interval.strip() in ("$__interval", "'$__interval'"):
        interval = ctx.interval
    seconds = interval_seconds(interval)
    if ctx.timescaledb:
        return f"time_bucket('{seconds}s',{column})"
    return f"floor(extract(epoch from {column})/{seconds})*{seconds}"


def _expand_macro(name: str, args: list[str], ctx: QueryContext) -> str:
    if name == "timeFilter":
        return f"{args[0]} BETWEEN '{_iso(ctx.time_from)}' AND '{_iso(ctx.time_to)}'"
    if name == "timeFrom":
        return f"'{_iso(ctx.time_from)}'"
    if name == "timeTo":
        return f"'{_iso(ctx.time_to)}'"
    if name == "timeGroup":
        return _time_group(args, ctx)
    if name == "timeGroupAlias":
        return _time_group(args, ctx) + ' AS "time"'
    raise ValueError(f"macro $__{name} is not supported by the expander")


MACRO = re.compile(r"\$__(timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup|\w+)\(([^()]*)\)")
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def _format_variable(var: Variable) -> str:
    if var.multi or var.include_all:
        return ",".join("'" + v.replace("'", "''") + "'" for v in var.values)
    return var.values[0] if var.values else ""


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana would send to PostgreSQL for this panel query."""

    def macro(match: re.Match[str]) -> str:
        args = [a.strip() for a in match[2].split(",")] if match[2].strip() else []
        return _expand_macro(match[1], args, ctx)

    sql = MACRO.sub(macro, sql)
    sql = sql.replace("$__interval", ctx.interval)

    def variable(match: re.Match[str]) -> str:
        name = match[1] or match[3]
        if name.startswith("__"):
            raise ValueError(f"unexpanded macro ${name}")
        if name not in ctx.variables:
            raise ValueError(f"variable ${name} is not defined")
        return _format_variable(ctx.variables[name])

    return VARIABLE.sub(variable, sql)


def variables_used(sql: str) -> set[str]:
    """Names of template variables referenced by a query (macros excluded)."""
    return {m[1] or m[3] for m in VARIABLE.finditer(MACRO.sub("", sql))} - {"__interval"}
