"""Every panel of every board, as data: title, visualisation, query, expected columns.

Queries use only the shared query surface and Grafana's PostgreSQL macros, so they run
unchanged on TimescaleDB (continuous aggregates) and plain PostgreSQL (rollup tables).
`tests/dashboards` expands each query as Grafana would and runs it on a real database.

Indicator ids come from indicators/ (docs/indicators.md): `air.pm2_5.mean`,
`air.aqi.<standard>` (daily index), `air.aqi.<standard>.level` (1 = best category),
`traffic.tti`, `water.domestic_lpcd`, `energy.electricity_kwh_per_capita`, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Viz = Literal["timeseries", "table", "stat", "state-timeline", "bargauge", "geomap", "barchart"]
Source = Literal["postgres", "prometheus"]


@dataclass(frozen=True)
class PanelSpec:
    key: str
    title: str
    viz: Viz
    query: str
    columns: tuple[str, ...] = ()  # columns the panel expects (postgres panels)
    source: Source = "postgres"
    fmt: Literal["time_series", "table"] = "table"
    unit: str = ""
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: tuple[tuple[float | None, str], ...] = ()  # (step start, colour); None = base
    threshold_lines: bool = False


@dataclass(frozen=True)
class BoardSpec:
    uid: str
    title: str
    folder: str
    description: str
    variables: tuple[str, ...]
    panels: tuple[PanelSpec, ...] = field(default_factory=tuple)


# WHO 2021 PM2.5 24-hour guideline and interim targets (µg/m³), drawn as threshold lines.
WHO_PM25_24H = (
    (None, "green"),
    (15.0, "#EAB839"),
    (25.0, "orange"),
    (37.5, "red"),
    (50.0, "purple"),
    (75.0, "dark-red"),
)
AQI_LEVELS = (
    (None, "green"),
    (2.0, "yellow"),
    (3.0, "orange"),
    (4.0, "red"),
    (5.0, "purple"),
    (6.0, "dark-red"),
)
PROGRESS = ((None, "red"), (50.0, "orange"), (100.0, "green"))
STALE = ((None, "green"), (900.0, "orange"), (3600.0, "red"))

ASEAN = BoardSpec(
    uid="kota-asean-comparison",
    title="ASEAN comparison",
    folder="ASEAN",
    description="Cities side by side: air quality in every ASEAN index, M&E indicators against targets.",
    variables=("country", "city", "standard", "focal_area"),
    panels=(
        PanelSpec(
            "pm25_daily",
            "PM2.5 daily mean per city",
            "timeseries",
            """SELECT bucket AS "time", city AS metric,
       sum(mean * n) / nullif(sum(n), 0) AS value
FROM readings_daily
WHERE quantity = 'pm2_5' AND city IN ($city) AND $__timeFilter(bucket)
GROUP BY 1, 2 ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            unit="µg/m³",
            width=24,
            thresholds=WHO_PM25_24H,
            threshold_lines=True,
            description="Mean of all PM2.5 sensors of the city per UTC day; dashed lines: WHO 2021 24-hour guideline (15) and interim targets.",
        ),
        PanelSpec(
            "aqi_calendar",
            "AQI category per city per day ($standard)",
            "state-timeline",
            """SELECT period_start::timestamptz AS "time", city AS metric, value
FROM indicator_values
WHERE indicator = 'air.aqi.$standard.level' AND period_type = 'day'
  AND city IN ($city) AND $__timeFilter(period_start::timestamptz)
ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            width=24,
            height=9,
            thresholds=AQI_LEVELS,
            description="Category of the daily index in the chosen national standard: 1 = best category of that standard.",
        ),
        PanelSpec(
            "latest_indicators",
            "Latest M&E indicators against targets",
            "table",
            """SELECT DISTINCT ON (iv.city, iv.indicator)
       c.name AS city, iv.indicator, iv.period_type, iv.period_start, iv.value, iv.unit,
       iv.target, iv.progress_pct, iv.rank, iv.completeness
FROM indicator_values iv
JOIN cities c ON c.locode = iv.city
JOIN indicator_definitions def ON def.indicator = iv.indicator
WHERE iv.city IN ($city) AND iv.period_type IN ('year', 'month')
  AND def.focal_area IN ($focal_area)
ORDER BY iv.city, iv.indicator, iv.period_start DESC""",
            (
                "city",
                "indicator",
                "period_type",
                "period_start",
                "value",
                "unit",
                "target",
                "progress_pct",
                "rank",
                "completeness",
            ),
            width=24,
            height=10,
            thresholds=PROGRESS,
            description="Traffic light on progress toward each city's target (targets in indicators/targets.toml).",
        ),
        PanelSpec(
            "pm25_ranking",
            "Annual PM2.5 mean, ranked",
            "bargauge",
            """SELECT c.name AS city, iv.value
FROM indicator_values iv JOIN cities c ON c.locode = iv.city
WHERE iv.indicator = 'air.pm2_5.mean' AND iv.period_type = 'year' AND iv.city IN ($city)
  AND iv.period_start = (SELECT max(period_start) FROM indicator_values
                         WHERE indicator = 'air.pm2_5.mean' AND period_type = 'year')
ORDER BY iv.value DESC""",
            ("city", "value"),
            unit="µg/m³",
            width=8,
            thresholds=WHO_PM25_24H,
        ),
        PanelSpec(
            "water_per_capita",
            "Domestic water per capita",
            "bargauge",
            """SELECT c.name AS city, avg(iv.value) AS value
FROM indicator_values iv JOIN cities c ON c.locode = iv.city
WHERE iv.indicator = 'water.domestic_lpcd' AND iv.period_type = 'day' AND iv.city IN ($city)
  AND $__timeFilter(iv.period_start::timestamptz)
GROUP BY c.name ORDER BY 2 DESC""",
            ("city", "value"),
            unit="L/person/day",
            width=8,
        ),
        PanelSpec(
            "electricity_per_capita",
            "Electricity use per capita",
            "bargauge",
            """SELECT c.name AS city, iv.value
FROM indicator_values iv JOIN cities c ON c.locode = iv.city
WHERE iv.indicator = 'energy.electricity_kwh_per_capita' AND iv.period_type = 'year'
  AND iv.city IN ($city)
ORDER BY 2 DESC""",
            ("city", "value"),
            unit="kWh/person/year",
            width=8,
        ),
    ),
)

CITY = BoardSpec(
    uid="kota-city-detail",
    title="City detail",
    folder="Cities",
    description="One city: sites on a map, pollutants against WHO guidelines, traffic, utilities, completeness.",
    variables=("city_one",),
    panels=(
        PanelSpec(
            "sites_map",
            "Sites",
            "geomap",
            """SELECT s.site_id, s.name, s.latitude, s.longitude, count(d.device_id) AS devices
FROM sites s LEFT JOIN devices d ON d.site_id = s.site_id AND d.status = 'active'
WHERE s.city = '$city_one'
GROUP BY s.site_id, s.name, s.latitude, s.longitude""",
            ("site_id", "name", "latitude", "longitude", "devices"),
            width=10,
            height=10,
        ),
        PanelSpec(
            "pollutants",
            "Pollutants (hourly means) with WHO 24-hour guideline",
            "timeseries",
            """SELECT $__timeGroupAlias(bucket, $__interval), quantity AS metric,
       sum(mean * n) / nullif(sum(n), 0) AS value
FROM readings_hourly
WHERE city = '$city_one' AND quantity IN ('pm2_5', 'pm10', 'no2', 'o3')
  AND $__timeFilter(bucket)
GROUP BY 1, 2 ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            unit="µg/m³",
            width=14,
            height=10,
            thresholds=WHO_PM25_24H,
            threshold_lines=True,
        ),
        PanelSpec(
            "traffic_speed",
            "Mean vehicle speed per site",
            "timeseries",
            """SELECT $__timeGroupAlias(bucket, $__interval), site AS metric,
       sum(mean * n) / nullif(sum(n), 0) AS value
FROM readings_hourly
WHERE city = '$city_one' AND quantity = 'vehicle_speed' AND $__timeFilter(bucket)
GROUP BY 1, 2 ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            unit="velocitykmh",
        ),
        PanelSpec(
            "tti",
            "Travel Time Index",
            "timeseries",
            """SELECT period_start::timestamptz AS "time", 'TTI' AS metric, value
FROM indicator_values
WHERE city = '$city_one' AND indicator = 'traffic.tti' AND period_type = 'day'
  AND $__timeFilter(period_start::timestamptz)
ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            thresholds=((None, "green"), (1.3, "orange"), (1.6, "red")),
            threshold_lines=True,
        ),
        PanelSpec(
            "utilities",
            "Daily water (m³) and electricity (kWh) per meter",
            "timeseries",
            """SELECT bucket AS "time", device || ' ' || quantity AS metric, max - min AS value
FROM readings_daily
WHERE city = '$city_one' AND quantity IN ('water_volume', 'active_energy_import')
  AND $__timeFilter(bucket)
ORDER BY 1""",
            ("time", "metric", "value"),
            fmt="time_series",
            width=12,
            description="Growth of each cumulative register over the day (a meter rollover shows as a dip).",
        ),
        PanelSpec(
            "completeness",
            "Data completeness per device (hours with data per day, %)",
            "table",
            """SELECT device, quantity, bucket::date AS day,
       round(100.0 * count(*) / 24, 1) AS completeness_pct
FROM readings_hourly
WHERE city = '$city_one' AND $__timeFilter(bucket)
GROUP BY device, quantity, bucket::date
ORDER BY completeness_pct, day DESC""",
            ("device", "quantity", "day", "completeness_pct"),
            width=12,
            unit="percent",
        ),
    ),
)

OPERATIONS = BoardSpec(
    uid="kota-operations",
    title="Operations",
    folder="Operations",
    description="Find a dead sensor in seconds: stale devices first, freshness, ingest health, dead letters.",
    variables=("country", "city"),
    panels=(
        PanelSpec(
            "stale_devices",
            "Devices by last seen (stale first)",
            "table",
            """SELECT d.device_id, d.city, d.site_id, d.driver, ls.last_seen,
       extract(epoch FROM now() - ls.last_seen) AS age_s
FROM devices d
LEFT JOIN (SELECT device, max(observed_at) AS last_seen FROM readings
           WHERE observed_at > now() - interval '7 days' GROUP BY device) ls
       ON ls.device = d.device_id
WHERE d.status = 'active' AND d.city IN ($city)
ORDER BY ls.last_seen ASC NULLS FIRST""",
            ("device_id", "city", "site_id", "driver", "last_seen", "age_s"),
            width=14,
            height=10,
            thresholds=STALE,
            unit="s",
        ),
        PanelSpec(
            "freshness",
            "Data freshness per city",
            "bargauge",
            """SELECT city, extract(epoch FROM now() - max(observed_at)) AS age_s
FROM readings
WHERE observed_at > now() - interval '7 days' AND city IN ($city)
GROUP BY city ORDER BY 2 DESC""",
            ("city", "age_s"),
            width=10,
            height=10,
            unit="s",
            thresholds=STALE,
        ),
        PanelSpec(
            "ingest_rate",
            "Readings written per second",
            "timeseries",
            "sum(rate(kota_ingest_readings_written_total[5m]))",
            source="prometheus",
            unit="ops",
            width=8,
        ),
        PanelSpec(
            "ingest_lag",
            "End-to-end lag p50 / p99 (observed to committed)",
            "timeseries",
            "histogram_quantile(0.99, sum by (le) (rate(kota_ingest_lag_seconds_bucket[5m])))",
            source="prometheus",
            unit="s",
            width=8,
        ),
        PanelSpec(
            "dead_letter_rate",
            "Dead letters per second by reason",
            "timeseries",
            "sum by (reason) (rate(kota_ingest_dead_letters_total[5m]))",
            source="prometheus",
            unit="ops",
            width=8,
        ),
        PanelSpec(
            "outbox",
            "Edge agents: outbox depth from heartbeats",
            "table",
            """SELECT agent_id, city, site, last_seen, version, outbox_depth, outbox_oldest_s
FROM agent_status WHERE city IN ($city)
ORDER BY outbox_depth DESC, last_seen ASC""",
            ("agent_id", "city", "site", "last_seen", "version", "outbox_depth", "outbox_oldest_s"),
            width=12,
        ),
        PanelSpec(
            "dead_letter_reasons",
            "Dead-letter reasons",
            "table",
            """SELECT reason, count(*) AS n, max(received_at) AS last_seen,
       min(coalesce(device, '')) AS example_device
FROM dead_letters WHERE $__timeFilter(received_at)
GROUP BY reason ORDER BY n DESC""",
            ("reason", "n", "last_seen", "example_device"),
            width=12,
        ),
    ),
)

BOARDS: tuple[BoardSpec, ...] = (ASEAN, CITY, OPERATIONS)

# Template variables: name -> (label, query or comma list, multi, include_all, kind)
VARIABLES: dict[str, tuple[str, str, bool, bool, str]] = {
    "country": ("Country", "SELECT DISTINCT country FROM cities ORDER BY 1", True, True, "query"),
    "city": (
        "City",
        "SELECT locode AS __value, name AS __text FROM cities WHERE country IN ($country) ORDER BY name",
        True,
        True,
        "query",
    ),
    "city_one": (
        "City",
        "SELECT locode AS __value, name AS __text FROM cities ORDER BY name",
        False,
        False,
        "query",
    ),
    "standard": (
        "AQI standard",
        "us_epa,th_pcd,vn_aqi,sg_psi,my_api,id_ispu",
        False,
        False,
        "custom",
    ),
    "focal_area": (
        "ASCN focal area",
        "Quality Environment,Health and Well-being,Built Infrastructure,Industry and Innovation,Civic and Social,Safety and Security",
        True,
        True,
        "custom",
    ),
}
