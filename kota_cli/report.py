"""The demo's self-contained HTML report (no network needed to open it) and PNG charts.

Reads only the shared query surface (indicator_values, cities, readings_daily, dead_letters)
so it shows exactly what the M&E exports and Grafana show. Charts are drawn with matplotlib
and inlined as SVG (text as paths, so no fonts or scripts are fetched); each chart is also
written as a PNG beside the report.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import psycopg
from matplotlib.figure import Figure

from indicators.aqi import get_standard

plt.rcParams.update(
    {"svg.fonttype": "path", "figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3}
)

WHO_PM25_24H = 15.0


@dataclass
class Report:
    html_path: Path
    pngs: list[Path] = field(default_factory=list)


def _rows(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def _series(
    conn: psycopg.Connection[Any], indicator: str, cities: list[str], period_type: str = "day"
) -> dict[str, list[tuple[date, float]]]:
    rows = _rows(
        conn,
        """SELECT city, period_start, value FROM indicator_values
        WHERE indicator = %(i)s AND period_type = %(p)s AND city = ANY(%(c)s) AND value IS NOT NULL
        ORDER BY city, period_start""",
        {"i": indicator, "p": period_type, "c": cities},
    )
    out: dict[str, list[tuple[date, float]]] = {}
    for city, day, value in rows:
        out.setdefault(city, []).append((day, float(value)))
    return out


def _svg(fig: Figure, png: Path) -> str:
    fig.savefig(png, format="png", bbox_inches="tight")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _line_chart(
    series: dict[str, list[tuple[date, float]]],
    names: dict[str, str],
    title: str,
    ylabel: str,
    hline: tuple[float, str] | None = None,
) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for city, points in series.items():
        days: list[Any] = [p[0] for p in points]  # matplotlib plots dates; its stubs say floats
        ax.plot(
            days,
            [p[1] for p in points],
            marker="o",
            markersize=3,
            label=names.get(city, city),
        )
    if hline:
        ax.axhline(hline[0], linestyle="--", color="grey", linewidth=1)
        ax.annotate(
            hline[1],
            (0.01, hline[0]),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            color="grey",
            va="bottom",
        )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    return fig


def _aqi_calendar(
    levels: dict[str, list[tuple[date, float]]],
    values: dict[str, list[tuple[date, float]]],
    names: dict[str, str],
    standard: str,
) -> Figure:
    std = get_standard(standard)
    days = sorted({d for pts in levels.values() for d, _ in pts})
    cities = list(levels)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.32 * len(days) + 2), 0.55 * max(len(cities), 1) + 1.6)
    )
    index_of = {(c, d): v for c, pts in values.items() for d, v in pts}
    for row, city in enumerate(cities):
        for day, level in levels[city]:
            category = std.categories[min(int(level), len(std.categories)) - 1]
            col = days.index(day)
            ax.add_patch(plt.Rectangle((col, row), 0.95, 0.9, color=category.colour))
            index = index_of.get((city, day))
            if index is not None and len(days) <= 40:
                ax.text(
                    col + 0.47, row + 0.45, f"{index:.0f}", ha="center", va="center", fontsize=6
                )
    ax.set_xlim(0, max(len(days), 1))
    ax.set_ylim(0, max(len(cities), 1))
    ax.set_yticks([i + 0.45 for i in range(len(cities))], [names.get(c, c) for c in cities])
    step = max(1, len(days) // 10)
    ax.set_xticks(
        [i + 0.47 for i in range(0, len(days), step)],
        [days[i].isoformat() for i in range(0, len(days), step)],
        rotation=45,
        fontsize=7,
    )
    ax.grid(False)
    ax.set_title(f"Daily AQI category per city — {std.name}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c.colour) for c in std.categories]
    ax.legend(
        handles,
        [c.name for c in std.categories],
        fontsize=7,
        ncol=len(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35),
    )
    return fig


def _bar_chart(values: dict[str, float], names: dict[str, str], title: str, ylabel: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    cities = sorted(values, key=values.__getitem__, reverse=True)
    ax.bar([names.get(c, c) for c in cities], [values[c] for c in cities], color="#3b7dd8")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def _mean(points: list[tuple[date, float]]) -> float:
    return sum(v for _, v in points) / len(points)


def _me_table(conn: psycopg.Connection[Any], cities: list[str], period_type: str) -> str:
    rows = _rows(
        conn,
        """SELECT c.name, iv.indicator, iv.period_start, iv.value, iv.unit, iv.completeness,
               iv.target, iv.progress_pct, iv.rank
        FROM indicator_values iv JOIN cities c ON c.locode = iv.city
        WHERE iv.city = ANY(%(c)s) AND iv.period_type = %(p)s
          AND iv.indicator NOT LIKE 'air.aqi.%%.days.%%' AND iv.indicator NOT LIKE 'air.aqi.%%.level'
        ORDER BY iv.indicator, c.name, iv.period_start""",
        {"c": cities, "p": period_type},
    )
    head = (
        "<tr>"
        + "".join(
            f"<th>{h}</th>"
            for h in (
                "City",
                "Indicator",
                "Period",
                "Value",
                "Unit",
                "Completeness",
                "Target",
                "Progress %",
                "Rank",
            )
        )
        + "</tr>"
    )

    def cell(v: Any) -> str:
        if v is None:
            return "<td class=na>—</td>"
        if isinstance(v, float):
            return f"<td class=num>{v:,.2f}</td>"
        return f"<td>{html.escape(str(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def build_report(
    conninfo: str,
    out_dir: Path,
    cities: list[str],
    *,
    standard: str = "us_epa",
    me_period: str = "month",
    summary_html: str = "",
) -> Report:
    """Write out_dir/report.html (self-contained) and out_dir/charts/*.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = out_dir / "charts"
    charts.mkdir(exist_ok=True)
    report = Report(out_dir / "report.html")
    with psycopg.connect(conninfo) as conn:
        names = dict(
            _rows(conn, "SELECT locode, name FROM cities WHERE locode = ANY(%(c)s)", {"c": cities})
        )
        sections: list[tuple[str, str, str]] = []

        def add(key: str, title: str, fig: Figure, note: str) -> None:
            png = charts / f"{key}.png"
            sections.append((title, _svg(fig, png), note))
            report.pngs.append(png)

        pm = _series(conn, "air.pm2_5.mean", cities)
        add(
            "pm25_daily",
            "PM2.5 daily mean per city",
            _line_chart(
                pm,
                names,
                "PM2.5 daily mean (local days)",
                "µg/m³",
                (WHO_PM25_24H, "WHO 2021 24-h guideline"),
            ),
            "Days with fewer than 18 valid hours are missing, not guessed.",
        )
        levels = _series(conn, f"air.aqi.{standard}.level", cities)
        index = _series(conn, f"air.aqi.{standard}", cities)
        add(
            "aqi_calendar",
            f"AQI category calendar ({standard})",
            _aqi_calendar(levels, index, names, standard),
            "Each square is one local day; the number is the daily index.",
        )
        tti = _series(conn, "traffic.tti", cities)
        add(
            "tti",
            "Traffic: Travel Time Index",
            _line_chart(
                tti,
                names,
                "Travel Time Index (free-flow speed / peak speed)",
                "TTI",
                (1.0, "free flow"),
            ),
            "1.30 means a 20-minute free-flow trip takes 26 minutes at peak.",
        )
        water = {c: _mean(p) for c, p in _series(conn, "water.domestic_lpcd", cities).items()}
        add(
            "water",
            "Domestic water per capita",
            _bar_chart(water, names, "Domestic water (mean of daily values)", "L/person/day"),
            "Sample-based: metered households / household size (docs/indicators.md).",
        )
        power = {
            c: _mean(p)
            for c, p in _series(conn, "energy.electricity_kwh_per_capita", cities).items()
        }
        add(
            "electricity",
            "Electricity per capita",
            _bar_chart(power, names, "Electricity use (annualised)", "kWh/person/year"),
            "Annualised from the days with meter data.",
        )
        table = _me_table(conn, cities, me_period)
    body = "".join(
        f"<section><h2>{html.escape(t)}</h2><figure>{svg}</figure><p class=note>{html.escape(n)}</p></section>"
        for t, svg, n in sections
    )
    report.html_path.write_text(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kota demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ margin-bottom: 0; }} .note {{ color: #666; font-size: 0.9em; }}
figure {{ margin: 0; }} figure svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
td.num {{ text-align: right; }} td.na {{ color: #aaa; text-align: center; }} th {{ background: #f3f3f3; }}
</style></head><body>
<h1>Kota demo report</h1>
<p class=note>Simulated devices in {len(cities)} ASEAN cities, carried through the real pipeline: device bytes, edge agent,
MQTT, gateway, ingest, PostgreSQL, indicator jobs. Every figure below is read back from the database.</p>
{summary_html}
{body}
<section><h2>M&amp;E indicators ({html.escape(me_period)})</h2>{table}</section>
</body></html>
""",
        encoding="utf-8",
    )
    return report
