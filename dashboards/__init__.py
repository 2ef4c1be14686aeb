"""Dashboards: Grafana comparative boards as code, file provisioning and push.

Owns: the panel queries (SQL against the shared query surface: readings_hourly,
readings_daily, readings, indicator_values, devices, sites, cities, dead_letters,
agent_status; PromQL for the server metrics), the dashboards built with Grafana's
grafana-foundation-sdk, the committed JSON in dashboards/provisioning/, the macro expander
the tests use to run every panel query against a real database, and `kota dashboards`.

May import: grafana-foundation-sdk, grafana-client, pyyaml, gateway.schema, indicators.aqi
(for category colours). Never imports ingest/gateway internals: dashboards only read tables.
"""
