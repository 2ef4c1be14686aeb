"""Indicators: the AQI engine, the batch indicator jobs and the M&E exports.

Owns: `indicators.aqi` (sub-indices for six AQI standards, see docs/aqi.md), the lazy polars
indicator jobs (`air`, `traffic`, `utilities`) that turn `readings` - from PostgreSQL over the
Arrow/COPY path or from the Parquet archive, the same code either way - into city indicators
per local day, month and year, the indicator catalogue (`catalogue.toml`), targets
(`targets.toml`), household sizes (`households.toml`), the M&E long table (`me`) written to
CSV/Parquet/XLSX and upserted into `indicator_values`, the `kota indicators` CLI and the
indicator benchmark (`bench`). Docs: docs/indicators.md.

May import: polars, pyarrow, psycopg, xlsxwriter, `storage`, `gateway.schema`, `kota_cli`
(errors, servers). Never gateway internals, ingest, dashboards, edge or firmware_sim.
`import indicators` stays light: the submodules import polars themselves.
"""
